//! Token formats: a quantised grid as compound words (`cp`, the product's) or REMI tokens
//! (`remi`, the baseline's), each decoding back to a grid, and the round-trip report
//! (`round_trip`).

pub mod cp;
pub mod remi;
pub mod round_trip;
