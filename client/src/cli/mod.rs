//! Parts of the `tidings` command line that have a module of their own (the binary only;
//! the library does the work).

pub mod care;
