#![no_main]

// Allocations over the cap abort, so a memory blow-up is a crash (see src/lib.rs).
#[global_allocator]
static ALLOC: wsedge_fuzz::CappedAlloc = wsedge_fuzz::CappedAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsedge::fuzzing::awareness(data));
