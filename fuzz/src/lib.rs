//! Support for the fuzz targets: an allocator that turns a memory blow-up into a crash.
//!
//! libFuzzer's `-malloc_limit_mb` works through a sanitizer's malloc hooks, which a
//! `--sanitizer none` build does not have, and `-rss_limit_mb` only sees memory that was touched,
//! sampled once a second: a decoder that reserves gigabytes for a count it was told (and touches a
//! little of it) would slip through. So every target counts its own heap and aborts (a crash
//! libFuzzer saves) the moment the live total passes [`LIMIT`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Live heap allowed to one target process (the same as `-rss_limit_mb=256` in run.sh).
pub const LIMIT: usize = 256 << 20;

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counted and capped at [`LIMIT`].
pub struct CappedAlloc;

fn grow(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed).saturating_add(by);
    if live > LIMIT {
        // No formatting machinery here: we are inside the allocator.
        let mut msg = *b"==wsedge-fuzz== heap over the 256 MiB cap; allocation of 0000000000000000000 bytes\n";
        let digits = &mut msg[57..76];
        let mut n = by;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let _ = std::io::stderr().write_all(&msg);
        std::process::abort();
    }
}

fn shrink(by: usize) {
    LIVE.fetch_sub(by, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` with the same arguments; only counting is added.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            shrink(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            shrink(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) };
        shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old {
            grow(new_size - old);
        }
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        match (p.is_null(), new_size > old) {
            (true, true) => shrink(new_size - old),
            (false, false) => shrink(old - new_size),
            _ => {}
        }
        p
    }
}
