pub mod benchmark;
pub mod inspect;
pub mod models;
pub mod predict;
