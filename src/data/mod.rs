//! Training data: data-set files of token sequences split by song (`dataset`), and the windows
//! and batches the trainer cuts from them, with the transposition augmentation (`batches`).

pub mod batches;
pub mod dataset;
