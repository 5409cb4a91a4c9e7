pub mod frame;
pub mod relay;
