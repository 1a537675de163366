//! The integration tests, linked into one test binary (`cargo test --test it`) so
//! that `util` is compiled once and one binary is linked instead of one per file.
//! Each module is one behaviour; `cargo test --test it serve_quota::` runs one.
//!
//! The tests share one process and run on parallel threads, so none may change
//! process-wide state (environment, current directory, umask, signal dispositions):
//! what a child `xfer` needs is set on its `Command` (`env`, `current_dir`).

mod util;

mod attack_findings;
mod authentication;
mod cli_messages;
mod client_commands;
mod content_hash;
mod delta;
mod delta_meta;
mod delta_stream;
mod dry_run;
mod fidelity;
mod fidelity_names;
mod fidelity_sparse;
mod filesystem;
mod filters;
mod fuzz_corpus;
mod hostile_peers;
mod ignore_times;
mod interop;
mod itemize_attrs;
mod layering;
mod link_in_target;
mod mirror;
mod mirror_meta;
mod negotiation;
mod offer_while_walking;
mod packed_control;
mod read_only_dirs;
mod readme;
mod recv_itemize;
mod resume;
mod review2_findings;
mod review_it_findings;
mod serve_fidelity;
mod serve_isolation;
mod serve_limits;
mod serve_partials;
mod serve_quota;
mod serve_quota_entries;
mod serve_quota_live;
mod serve_reload;
mod serve_users;
mod shell_mirror;
mod small_files;
mod tampering;
mod told_dropped;
mod transfer;
mod type_change;
mod unsent;
