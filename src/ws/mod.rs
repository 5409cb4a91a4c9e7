pub mod conn;
pub mod frame;
pub mod rates;
pub mod relay;
