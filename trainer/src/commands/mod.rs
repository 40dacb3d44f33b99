pub mod benchmark;
pub mod collective;
pub mod data;
pub mod golden;
pub mod inspect;
pub mod models;
pub mod predict;
pub mod validate;
