pub mod bench;
pub mod engine;
