//! The commands: one function per subcommand, each taking the plain options `cli`
//! built and doing its work through the layers below (a link from `net`, sessions
//! from `transfer`, files from `fs`), reporting through `ui`. One file each:
//! [`send`], [`recv`], [`remote`] (get, ls, mkdir, rm, mv), [`keys`] (keygen,
//! passwd), [`link`], the loop `send` and `recv` meet their peer with, and `target`,
//! the local directory a download goes into. Nothing
//! here imports `cli`: dispatch on the parsed command line is `main.rs`'s.

pub(crate) mod keys;
pub(crate) mod link;
pub(crate) mod recv;
pub(crate) mod remote;
pub(crate) mod send;
