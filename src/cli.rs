//! The command line: clap derive types, one args struct per subcommand, the shared
//! flags flattened in. Doc comments here are the `--help` text. Values are parsed
//! into types (`Endpoint`, `ListenAddr`, `PathBuf`) before any work starts.

// The doc comments here are --help text, where `[ADDR:]PORT` is literal, not a link.
#![allow(rustdoc::broken_intra_doc_links)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::net::{Endpoint, Link, ListenAddr, ServeOptions, Timeouts};

/// Move files between two machines over TCP, authenticated with a shared key and
/// verified end to end (MD5 per file, bound to the session by an HMAC).
#[derive(Debug, Parser)]
#[command(name = "xfer", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send files to a receiver that listens at HOST:PORT.
    Send(SendArgs),
    /// Receive files: listen on a port and write what arrives into a directory.
    Recv(RecvArgs),
    /// Make a new random key (256 bits, as 64 hex digits).
    Keygen(KeygenArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(CompletionsArgs),
    /// Print the man page (roff) on stdout: `xfer man > xfer.1`.
    Man,
}

/// Flags both transfer subcommands take.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Read the shared key from PATH (one trailing newline is ignored) [default: $XFER_KEY]
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,

    /// No progress bar and no summary; errors are still printed
    #[arg(short, long)]
    pub quiet: bool,

    /// Report as newline-delimited JSON events on stdout (on stderr with `recv --stdout`)
    #[arg(long)]
    pub json: bool,
}

/// How this side meets its peer: connect (the default) or listen.
#[derive(Debug, Args)]
pub struct LinkArgs {
    /// Listen on [ADDR:]PORT for the peer to connect, instead of connecting (PORT alone:
    /// all interfaces; port 0: any free port, printed as "listening on ADDR:PORT" on stderr)
    #[arg(long, value_name = "[ADDR:]PORT")]
    pub listen: Option<ListenAddr>,

    /// With --listen: keep serving peers, concurrently, until SIGINT or SIGTERM,
    /// instead of exiting after the first session
    #[arg(long, requires = "listen")]
    pub serve: bool,

    /// With --listen: authenticated sessions at once; more are refused as busy
    /// (peers still in the handshake have their own allowance and deadline)
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_conns: u32,

    /// When connecting: while nobody listens yet, keep retrying for up to SECS
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 0,
        conflicts_with = "listen"
    )]
    pub wait: u64,

    /// Give up on a peer that sends or takes nothing for SECS
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,

    /// The whole handshake must be over within SECS of connecting
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub handshake_timeout: u64,
}

impl LinkArgs {
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            handshake: Duration::from_secs(self.handshake_timeout),
            idle: Duration::from_secs(self.timeout),
        }
    }

    /// The link: listen if asked to, else connect to `to`.
    pub fn link(&self, to: Option<&Endpoint>) -> Link {
        match (&self.listen, to) {
            (Some(at), _) => Link::Listen {
                at: at.clone(),
                serve: ServeOptions {
                    once: !self.serve,
                    max_conns: self.max_conns as usize,
                    timeouts: self.timeouts(),
                },
            },
            (None, Some(to)) => Link::Connect {
                to: to.clone(),
                wait: Duration::from_secs(self.wait),
            },
            (None, None) => unreachable!("the parser requires an address or --listen"),
        }
    }
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The files and directories to send (`-`: standard input), then, unless
    /// --listen is given, the receiver's address (HOST:PORT; IPv6 as [ADDR]:PORT)
    #[arg(value_name = "FILE... HOST:PORT", required = true, num_args = 1..)]
    operands: Vec<OsString>,

    /// The name standard input (`-`) arrives under
    #[arg(long, value_name = "NAME", default_value = "stdin")]
    pub name: String,

    /// Inside directories, send what symbolic links point at instead of skipping them
    #[arg(long)]
    pub follow_symlinks: bool,

    #[command(flatten)]
    pub link: LinkArgs,

    #[command(flatten)]
    pub common: CommonArgs,

    /// The files to send (from the operands).
    #[arg(skip)]
    pub files: Vec<PathBuf>,

    /// Where to send them (the last operand), unless listening.
    #[arg(skip)]
    pub to: Option<Endpoint>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("peer").required(true).args(["from", "listen"]))]
pub struct RecvArgs {
    /// Connect to a sender listening at HOST:PORT (`xfer send FILE... --listen PORT`)
    #[arg(value_name = "HOST:PORT", conflicts_with = "serve")]
    pub from: Option<Endpoint>,

    #[command(flatten)]
    pub link: LinkArgs,

    /// Write received files into DIR (created if missing)
    #[arg(long, short, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,

    /// Replace existing files (atomically: readers see the old or the new file, never a mix)
    #[arg(long)]
    pub overwrite: bool,

    /// Write the one received file to standard output instead of DIR (an offer of
    /// several files or a directory is refused). The bytes are out before they are
    /// verified: on a checksum failure xfer exits 5 and the output must be discarded
    #[arg(long, conflicts_with_all = ["dir", "overwrite", "serve"])]
    pub stdout: bool,

    /// Do not resume: discard partial data of interrupted transfers instead of
    /// continuing from it
    #[arg(long)]
    pub no_resume: bool,

    /// Remove partial data that no sender came back for after HOURS
    #[arg(long, value_name = "HOURS", default_value_t = 24)]
    pub keep_partial: u64,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write the key to PATH (created with mode 0600, never replaced) instead of standard output
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

impl Cli {
    /// Parses and checks the process's arguments; exits with clap's usage error (2) on failure.
    pub fn parse_checked() -> Cli {
        Cli::try_parse_checked(std::env::args_os()).unwrap_or_else(|err| err.exit())
    }

    /// Parses and checks `args` (the program name first).
    pub fn try_parse_checked<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut cli = Cli::try_parse_from(args)?;
        if let Command::Send(send) = &mut cli.command {
            send.split_operands()?;
        }
        Ok(cli)
    }
}

impl SendArgs {
    /// Unless listening, the last operand is the address; the rest are files.
    fn split_operands(&mut self) -> Result<(), clap::Error> {
        let invalid = |message: String| {
            Cli::command().error(clap::error::ErrorKind::ValueValidation, message)
        };
        if self.link.listen.is_some() {
            self.files = self.operands.iter().map(PathBuf::from).collect();
            return Ok(());
        }
        let (to, files) = match self.operands.split_last() {
            Some((to, files)) if !files.is_empty() => (to, files),
            _ => {
                return Err(invalid(
                    "give the files to send and then HOST:PORT (or --listen PORT)".into(),
                ));
            }
        };
        let to = to
            .to_str()
            .ok_or_else(|| invalid(format!("{to:?} is not a HOST:PORT address")))?;
        let to = to
            .parse::<Endpoint>()
            .map_err(|why| invalid(format!("invalid address: {why}")))?;
        self.to = Some(to);
        self.files = files.iter().map(PathBuf::from).collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_checked(std::iter::once("xfer").chain(args.iter().copied()))
    }

    #[test]
    fn send_takes_files_then_the_address() {
        let cli = parse(&[
            "send",
            "a.txt",
            "dir/b.bin",
            "[::1]:9000",
            "--key-file",
            "k",
        ])
        .unwrap();
        let Command::Send(send) = cli.command else {
            panic!("not send")
        };
        assert_eq!(
            send.files,
            [PathBuf::from("a.txt"), PathBuf::from("dir/b.bin")]
        );
        assert_eq!(send.to.unwrap().to_string(), "[::1]:9000");
        assert_eq!(send.common.key_file, Some(PathBuf::from("k")));
    }

    #[test]
    fn send_without_files_or_with_a_bad_address_is_a_usage_error() {
        for args in [
            &["send", "host:9000"][..],
            &["send", "a.txt", "host"],
            &["send", "a", "host:0"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn recv_defaults_and_flags() {
        let cli = parse(&["recv", "--listen", "0"]).unwrap();
        let Command::Recv(recv) = cli.command else {
            panic!("not recv")
        };
        assert_eq!(recv.link.listen, Some(ListenAddr::AllInterfaces(0)));
        assert_eq!(recv.dir, PathBuf::from("."));
        assert!(!recv.overwrite && !recv.link.serve && !recv.common.quiet && !recv.no_resume);
        let defaults = (
            recv.link.max_conns,
            recv.link.timeout,
            recv.link.handshake_timeout,
        );
        assert_eq!((defaults, recv.keep_partial), ((16, 60, 10), 24));

        let cli = parse(&[
            "recv",
            "--listen",
            "127.0.0.1:9000",
            "-d",
            "out",
            "--overwrite",
            "--serve",
            "-q",
        ])
        .unwrap();
        let Command::Recv(recv) = cli.command else {
            panic!("not recv")
        };
        assert_eq!(recv.dir, PathBuf::from("out"));
        assert!(recv.overwrite && recv.link.serve && recv.common.quiet);
    }

    #[test]
    fn either_side_may_listen() {
        let cli = parse(&["send", "a", "b", "--listen", "9000", "--serve"]).unwrap();
        let Command::Send(send) = cli.command else {
            panic!("not send")
        };
        assert_eq!(send.files.len(), 2);
        assert!(send.to.is_none());
        assert!(matches!(send.link.link(None), Link::Listen { .. }));

        let cli = parse(&["recv", "host:9000", "--wait", "5", "-d", "out"]).unwrap();
        let Command::Recv(recv) = cli.command else {
            panic!("not recv")
        };
        let Link::Connect { to, wait } = recv.link.link(recv.from.as_ref()) else {
            panic!("connect")
        };
        assert_eq!((to.to_string(), wait.as_secs()), ("host:9000".into(), 5));
    }

    #[test]
    fn link_flags_that_contradict_are_usage_errors() {
        for args in [
            &["recv"][..],
            &["recv", "host:1", "--listen", "0"],
            &["recv", "host:1", "--serve"],
            &["recv", "--listen", "0", "--wait", "3"],
            &["recv", "--listen", "0", "--timeout", "0"],
            &["send", "a", "host:1", "--serve"],
            &["send", "a"],
        ] {
            assert_eq!(
                parse(args).map(|_| ()).unwrap_err().exit_code(),
                2,
                "{args:?}"
            );
        }
    }

    #[test]
    fn the_key_itself_is_never_an_argument() {
        assert!(parse(&["recv", "--listen", "0", "--key", "secret"]).is_err());
    }

    #[test]
    fn keygen_path_is_optional() {
        let cli = parse(&["keygen"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Keygen(KeygenArgs { path: None })
        ));
        let cli = parse(&["keygen", "k"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Keygen(KeygenArgs { path: Some(_) })
        ));
    }

    #[test]
    fn send_stream_and_tree_flags() {
        let cli = parse(&["send", "-", "h:1", "--name", "backup.tar", "--json"]).unwrap();
        let Command::Send(send) = cli.command else {
            panic!("not send")
        };
        assert_eq!(send.files, [PathBuf::from("-")]);
        assert_eq!(send.name, "backup.tar");
        assert!(send.common.json && !send.follow_symlinks);
        let cli = parse(&["send", "dir", "h:1", "--follow-symlinks"]).unwrap();
        let Command::Send(send) = cli.command else {
            panic!("not send")
        };
        assert_eq!(send.name, "stdin");
        assert!(send.follow_symlinks);
    }

    #[test]
    fn stdout_excludes_what_only_a_directory_needs() {
        assert!(parse(&["recv", "--listen", "0", "--stdout"]).is_ok());
        for flag in ["--serve", "--overwrite"] {
            assert!(
                parse(&["recv", "--listen", "0", "--stdout", flag]).is_err(),
                "{flag}"
            );
        }
        assert!(parse(&["recv", "--listen", "0", "--stdout", "--dir", "x"]).is_err());
    }

    #[test]
    fn completions_take_a_known_shell() {
        assert!(parse(&["completions", "bash"]).is_ok());
        assert!(parse(&["completions", "tcsh"]).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
