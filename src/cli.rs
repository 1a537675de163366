//! The command line: clap derive types, one args struct per subcommand, the shared
//! flags flattened in. Doc comments here are the `--help` text. Values are parsed
//! into types (`Endpoint`, `ListenAddr`, `PathBuf`) before any work starts.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::net::{Endpoint, ListenAddr, Timeouts};

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

impl CommonArgs {
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The files and directories to send (`-`: standard input), then the receiver's
    /// address (HOST:PORT; IPv6 as [ADDR]:PORT)
    #[arg(value_name = "FILE... HOST:PORT", required = true, num_args = 2..)]
    operands: Vec<OsString>,

    /// The name standard input (`-`) arrives under
    #[arg(long, value_name = "NAME", default_value = "stdin")]
    pub name: String,

    /// Inside directories, send what symbolic links point at instead of skipping them
    #[arg(long)]
    pub follow_symlinks: bool,

    #[command(flatten)]
    pub common: CommonArgs,

    /// The files to send (from the operands).
    #[arg(skip)]
    pub files: Vec<PathBuf>,

    /// Where to send them (the last operand).
    #[arg(skip = Endpoint { host: String::new(), port: 0 })]
    pub to: Endpoint,
}

#[derive(Debug, Args)]
pub struct RecvArgs {
    /// Listen on [ADDR:]PORT (PORT alone: all interfaces; port 0: any free port,
    /// printed as "listening on ADDR:PORT" on stderr)
    #[arg(long, value_name = "[ADDR:]PORT")]
    pub listen: ListenAddr,

    /// Write received files into DIR (created if missing)
    #[arg(long, short, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,

    /// Replace existing files (atomically: readers see the old or the new file, never a mix)
    #[arg(long)]
    pub overwrite: bool,

    /// Keep accepting senders, one thread per connection, instead of exiting after the first session
    #[arg(long)]
    pub serve: bool,

    /// Write the one received file to standard output instead of DIR (an offer of
    /// several files or a directory is refused). The bytes are out before they are
    /// verified: on a checksum failure xfer exits 5 and the output must be discarded
    #[arg(long, conflicts_with_all = ["dir", "overwrite", "serve"])]
    pub stdout: bool,

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
    /// The last operand is the address, the rest are files.
    fn split_operands(&mut self) -> Result<(), clap::Error> {
        let invalid = |message: String| {
            Cli::command().error(clap::error::ErrorKind::ValueValidation, message)
        };
        let (to, files) = self
            .operands
            .split_last()
            .ok_or_else(|| invalid("nothing to send".into()))?;
        let to = to
            .to_str()
            .ok_or_else(|| invalid(format!("{to:?} is not a HOST:PORT address")))?;
        self.to = to
            .parse()
            .map_err(|why| invalid(format!("invalid address: {why}")))?;
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
        assert_eq!(send.to.to_string(), "[::1]:9000");
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
        assert_eq!(recv.listen, ListenAddr::AllInterfaces(0));
        assert_eq!(recv.dir, PathBuf::from("."));
        assert!(!recv.overwrite && !recv.serve && !recv.common.quiet);

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
        assert!(recv.overwrite && recv.serve && recv.common.quiet);
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
