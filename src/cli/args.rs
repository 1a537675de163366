//! The clap types: one args struct per subcommand, the shared flags flattened in.
//! Doc comments here are the `--help` text (and the man pages, `man.rs`). Values are
//! parsed into types (`Endpoint`, `ListenAddr`, durations, sizes) with their bounds
//! before any work starts. Nothing here builds option structs (`options.rs` does)
//! or runs anything.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::values;
use crate::net::{Endpoint, ListenAddr};
use crate::units;

/// The exit codes, as every `--help` ends.
const EXIT_CODES: &str = "\
Exit codes:
  0  every file was delivered and verified (or was already there)
  1  any other error (no key given, ...)
  2  usage error
  3  network: cannot connect, connection lost, peer busy or timed out
  4  authentication failed (wrong key, unknown user)
  5  verification failed (checksum or MAC)
  6  refused by the peer (exists, unsafe path, not found, denied, quota, ...)
  7  local I/O error (cannot read, cannot write, disk full)
  8  protocol error (malformed or unexpected frames, a role mismatch)
  9  incompatible peer (protocol version, or a feature one side requires)
  10 some entries were not transferred (a socket, an unreadable file, a name the
     peer cannot take); everything else arrived and verified";

/// The exit codes of the requests that move no file (`ls`, `mkdir`, `rm`, `mv`).
const REQUEST_EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  any other error (no key given, ...)
  2  usage error
  3  network: cannot connect, connection lost, server busy or timed out
  4  authentication failed (wrong key, unknown user)
  6  refused by the server (not found, exists, denied, not empty, bad path, quota)
  7  local I/O error (cannot write the output)
  8  protocol error (malformed or unexpected frames)
  9  incompatible server (protocol version, or a feature one side requires)";

/// The exit codes of the commands that stay on this machine (`keygen`, `passwd`,
/// `completions`, `man`).
const LOCAL_EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  any other error (no password given, ...)
  2  usage error
  7  local I/O error (cannot write, the file exists)";

/// A request's examples, then its exit codes.
fn with_request_exit_codes(examples: &str) -> String {
    format!("{examples}\n\n{REQUEST_EXIT_CODES}")
}

/// A local command's examples, then its exit codes.
fn with_local_exit_codes(examples: &str) -> String {
    format!("{examples}\n\n{LOCAL_EXIT_CODES}")
}

const LS_EXAMPLES: &str = "\
Examples:
  xfer ls files.example.org:9000 --user alice    # the home
  xfer ls -lh files.example.org:9000:photos      # kind, mode, size, time, name
  xfer ls -R files.example.org:9000:photos/      # and everything beneath, as paths
  xfer ls --usage -h files.example.org:9000      # bytes and entries against the quota
  xfer ls --json files.example.org:9000:inbox    # one JSON object per entry";

const MKDIR_EXAMPLES: &str = "\
Examples:
  xfer mkdir files.example.org:9000:photos/2026/june --user alice";

const RM_EXAMPLES: &str = "\
Examples:
  xfer rm files.example.org:9000:inbox/old.pdf --user alice
  xfer rm host:9000:inbox/a.pdf host:9000:inbox/b.pdf --user alice
  xfer rm -r files.example.org:9000:inbox/2024/ --user alice   # and all inside it";

const MV_EXAMPLES: &str = "\
Examples:
  xfer mv files.example.org:9000:inbox/report.pdf archive/2026-report.pdf --user alice
  xfer mv host:9000:inbox/a.pdf host:9000:archive/a.pdf    # NEW with the server: the same one";

const KEYGEN_EXAMPLES: &str = "\
Examples:
  xfer keygen ~/.config/xfer.key                 # then --key-file ~/.config/xfer.key
  export XFER_KEY=$(xfer keygen)                 # a key for this shell";

const PASSWD_EXAMPLES: &str = "\
Examples:
  xfer passwd bob --realm files.example.org >> /etc/xfer/users.toml
  XFER_PASSWORD=... xfer passwd bob --realm files.example.org   # from a script";

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  xfer completions bash > ~/.local/share/bash-completion/completions/xfer
  xfer completions zsh > ~/.zfunc/_xfer";

const MAN_EXAMPLES: &str = "\
Examples:
  xfer man send | man -l -                       # read xfer-send(1)
  xfer man --dir ~/.local/share/man/man1         # install every page";

const MAIN_EXAMPLES: &str = "\
Examples:
  xfer recv --listen 9000 --dir ~/inbox          # receiving machine: prints a key to use
  XFER_KEY=... xfer send photos/ notes.txt host:9000
  tar c dir | xfer send - host:9000 --name dir.tar
  xfer keygen ~/.config/xfer.key                 # a key to keep, for --key-file";

/// Move files between machines over TCP: encrypted, authenticated with a shared key,
/// and verified end to end (MD5 or BLAKE3 per file, bound to the session by a MAC).
#[derive(Debug, Parser)]
#[command(
    name = "xfer",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = format!("{MAIN_EXAMPLES}\n\n{EXIT_CODES}"),
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Send files to a receiver at HOST:PORT, or to whoever connects (--listen).
    Send(SendArgs),
    /// Receive files: listen on a port (or connect to a listening sender) and write
    /// what arrives into a directory.
    Recv(RecvArgs),
    /// Serve files to several users: each logs in with their own key, is confined
    /// to a home beneath DIR, and has a quota.
    Serve(ServeArgs),
    /// Download files and directories from a server.
    Get(GetArgs),
    /// List a directory on a server (or show usage against the quota).
    #[command(disable_help_flag = true, after_help = with_request_exit_codes(LS_EXAMPLES))]
    Ls(LsArgs),
    /// Make a directory (and its parents) on a server.
    #[command(after_help = with_request_exit_codes(MKDIR_EXAMPLES))]
    Mkdir(RemotePathArgs),
    /// Remove files or empty directories on a server (-r: directories with all inside).
    #[command(after_help = with_request_exit_codes(RM_EXAMPLES))]
    Rm(RmArgs),
    /// Rename a file or directory on a server.
    #[command(after_help = with_request_exit_codes(MV_EXAMPLES))]
    Mv(MvArgs),
    /// An interactive session against a server, like sftp (or a script of commands).
    Shell(ShellArgs),
    /// Make a new random key (256 bits, as 64 hex digits).
    #[command(after_help = with_local_exit_codes(KEYGEN_EXAMPLES))]
    Keygen(KeygenArgs),
    /// Derive a user's key from a password, for a server's users file.
    #[command(after_help = with_local_exit_codes(PASSWD_EXAMPLES))]
    Passwd(PasswdArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) on stdout.
    #[command(after_help = with_local_exit_codes(COMPLETIONS_EXAMPLES))]
    Completions(CompletionsArgs),
    /// Print a man page (roff) on stdout, or write all of them into a directory.
    #[command(after_help = with_local_exit_codes(MAN_EXAMPLES))]
    Man(ManArgs),
}

/// Who this side is: the key, and the user it logs in as.
#[derive(Debug, Args)]
pub(crate) struct AuthArgs {
    /// Read the shared key from PATH (a regular file; one trailing newline is
    /// ignored) [default: $XFER_KEY]
    #[arg(long, value_name = "PATH")]
    pub(crate) key_file: Option<PathBuf>,

    /// Log in as NAME (the user's own key on a server; bound into the handshake
    /// everywhere)
    #[arg(long, value_name = "NAME", env = "XFER_USER")]
    pub(crate) user: Option<String>,

    /// Log in with a password instead of a key (asked on the terminal, or
    /// $XFER_PASSWORD); needs --user
    #[arg(long, requires = "user", conflicts_with = "key_file")]
    pub(crate) password: bool,
}

/// What protects and verifies the transfer.
#[derive(Debug, Args)]
pub(crate) struct SecurityArgs {
    /// The content hash that verifies each file: blake3 (fast, and collision-resistant)
    /// refuses a peer without it; md5 uses MD5 even with a peer that has BLAKE3 (a
    /// listener then does not offer it) [default: blake3 whenever the peer has it, else
    /// md5]
    #[arg(long, value_enum, value_name = "HASH", env = "XFER_HASH")]
    pub(crate) hash: Option<HashChoice>,

    /// Refuse a peer that cannot encrypt (by default xfer encrypts whenever the peer
    /// can, and warns when it cannot)
    #[arg(long, conflicts_with = "no_encrypt")]
    pub(crate) encrypt: bool,

    /// Send in clear, for a trusted link where every cycle counts (names and data
    /// are then visible on the wire; they stay authenticated)
    #[arg(long)]
    pub(crate) no_encrypt: bool,

    /// Send whole files, never only what changed in a file the receiver already
    /// holds (as rsync's -W)
    #[arg(long, short = 'W')]
    pub(crate) whole_file: bool,
}

/// The content hashes `--hash` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum HashChoice {
    Md5,
    Blake3,
}

/// How to report.
#[derive(Debug, Args)]
pub(crate) struct OutputArgs {
    /// Print nothing but errors (no progress bar, no summary; a listener on port 0
    /// still says where it listens)
    #[arg(short, long)]
    pub(crate) quiet: bool,

    /// Report as newline-delimited JSON events on stdout (on stderr with `recv --stdout`)
    #[arg(long)]
    pub(crate) json: bool,
}

/// `get --delete`, in place of the text `send` shows.
const GET_DELETE: &str = "Mirror: after the tree arrived and verified, remove what the local \
     copies of the directories downloaded hold and the server's do not (never what a filter \
     excludes), and let a file, link or special file replace a local directory holding \
     entries, which go with it; implies -f. Needs a server with the feature `mirror`";

/// `get --delete-excluded`: this side decides, whatever the server knows.
const GET_DELETE_EXCLUDED: &str = "With --delete: also delete in the local directory what the \
     filters exclude (they no longer protect it), as rsync's --delete-excluded. xfer's own \
     partial files, what changed since the session began and what another session writes stay";

/// `get --ignore-times`: this side decides, whatever the server knows.
const GET_IGNORE_TIMES: &str = "Download files whose size and modification time match the \
     local ones too, instead of skipping them (rsync's -I): they go through the delta, so an \
     unchanged file costs only its chunks' sums, and is kept as it is. Only with -f or --delete";

/// Keeping a copy up to date: filters, `--delete`, a dry run, itemized changes.
#[derive(Debug, Args)]
pub(crate) struct MirrorArgs {
    /// Mirror: after the tree arrived and verified, remove what the receiver's
    /// copies of the directories sent hold and the sender's do not (never what a
    /// filter excludes), and let a file, link or special file replace a directory
    /// holding entries, which go with it. A plain receiver allows it only with `recv --overwrite`;
    /// into a server it implies -f. Needs a peer with the feature `mirror`
    #[arg(long)]
    pub(crate) delete: bool,

    /// With --delete: also delete on the receiving side what the filters exclude
    /// (they no longer protect it), as rsync's --delete-excluded. xfer's own partial
    /// files, what changed since the session began and what another session writes
    /// stay. A receiver too old to know it keeps what the filters exclude
    #[arg(long, requires = "delete")]
    pub(crate) delete_excluded: bool,

    /// Leave out what matches PATTERN (gitignore syntax: `*.tmp`, `target/`,
    /// `/top-only`, `**/cache`), matched below each directory sent; repeatable
    #[arg(long, value_name = "PATTERN")]
    pub(crate) exclude: Vec<String>,

    /// Send what matches PATTERN even where an --exclude left it out (not inside
    /// an excluded directory); repeatable
    #[arg(long, value_name = "PATTERN")]
    pub(crate) include: Vec<String>,

    /// Read exclude patterns from FILE, one a line (gitignore syntax: `#` comments,
    /// `!` re-includes); repeatable
    #[arg(long, value_name = "FILE")]
    pub(crate) exclude_from: Vec<PathBuf>,

    /// Honour the `.gitignore` and `.ignore` files found in the trees sent
    #[arg(long)]
    pub(crate) gitignore: bool,

    /// Only show what would be sent (new, changed with what a delta would move, same),
    /// deleted and skipped: nothing is sent, written, made or deleted on either side.
    /// Exits 6 where the receiver would refuse entries, as the real run would. Needs a
    /// peer with `mirror`
    #[arg(long, short = 'n')]
    pub(crate) dry_run: bool,

    /// Send files whose size and modification time match the receiver's too,
    /// instead of skipping them (rsync's -I): they go through the delta, so an
    /// unchanged file costs only its chunks' sums, and the receiver keeps it as it
    /// is. Only where files are replaced (`recv --overwrite`, -f into a server,
    /// --delete)
    #[arg(long, short = 'I')]
    pub(crate) ignore_times: bool,

    /// Print one line per changed entry on stdout (new, replaced, deleted, new dir,
    /// attrs: there already, with other mode, time, owner or attributes), like
    /// rsync's -i; `change` events with --json
    #[arg(long, short = 'i')]
    pub(crate) itemize: bool,
}

/// How this side meets its peer: connect (the default) or listen.
#[derive(Debug, Args)]
pub(crate) struct LinkArgs {
    /// Listen on [ADDR:]PORT for the peer to connect, instead of connecting (PORT alone:
    /// all interfaces; port 0: any free port, printed as "listening on ADDR:PORT" on stderr)
    #[arg(long, value_name = "[ADDR:]PORT")]
    pub(crate) listen: Option<ListenAddr>,

    /// With --listen: keep serving peers, concurrently, until SIGINT or SIGTERM,
    /// instead of exiting after the first session
    #[arg(long, requires = "listen")]
    pub(crate) serve: bool,

    /// With --listen: authenticated sessions at once; more are refused as busy
    #[arg(long, value_name = "N", default_value = "16", value_parser = units::count)]
    pub(crate) max_conns: usize,

    /// With --listen: connections still in the handshake from one address; a
    /// newer one cuts the oldest that has waited a second
    #[arg(long, value_name = "N", default_value = "32", value_parser = units::count)]
    pub(crate) max_pending_per_address: usize,

    /// When connecting: while nobody listens yet, keep retrying for SECS
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = units::seconds, conflicts_with = "listen")]
    pub(crate) wait: Duration,

    /// Give up on a peer that sends nothing we wait for, or takes nothing we send,
    /// for SECS [default: never for reads (TCP keepalive notices a vanished peer
    /// within about a minute), 120 for writes]
    #[arg(long, visible_alias = "timeout", value_name = "SECS", value_parser = units::positive_seconds)]
    pub(crate) idle_timeout: Option<Duration>,

    /// The whole handshake must be over within SECS of connecting
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = units::positive_seconds)]
    pub(crate) handshake_timeout: Duration,

    /// At most RATE bytes per second, averaged (K, M, G count 1024s as in curl;
    /// KB, MB, GB 1000s; KiB, MiB, GiB 1024s): `--limit-rate 2M`
    #[arg(long, value_name = "RATE", value_parser = units::rate)]
    pub(crate) limit_rate: Option<u64>,
}

const SEND_EXAMPLES: &str = "\
Examples:
  xfer send report.pdf host:9000                 # to `xfer recv --listen 9000`
  xfer send photos/ host:9000 --hash blake3      # a tree; refuse a receiver without BLAKE3
  tar c dir | xfer send - host:9000 --name dir.tar
  xfer send logs/ host:9000 --compress           # zstd on the way
  xfer send big.iso --listen 9000                # the receiver connects: xfer recv HOST:9000
  xfer send a.txt files.example.org:9000:inbox --user alice   # into a server's inbox/";

#[derive(Debug, Args)]
#[command(
    override_usage = "xfer send [OPTIONS] FILE... HOST:PORT[:DIR]\n       xfer send [OPTIONS] FILE... --listen [ADDR:]PORT",
    after_help = format!("{SEND_EXAMPLES}\n\n{EXIT_CODES}"),
)]
pub(crate) struct SendArgs {
    /// The files and directories to send (`-` or a named pipe: a stream), then,
    /// unless --listen is given, where to: HOST:PORT (IPv6 as [ADDR]:PORT), or
    /// HOST:PORT:DIR for a directory on a server
    #[arg(value_name = "FILE... HOST:PORT", required = true, num_args = 1..)]
    pub(crate) operands: Vec<OsString>,

    /// The name the one operand arrives under (standard input: `stdin` by default)
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,

    /// Inside directories, send what symbolic links point at instead of the links
    #[arg(long)]
    pub(crate) follow_symlinks: bool,

    /// Send every name of a file with several links as a separate copy (by
    /// default they arrive as hard links of one file)
    #[arg(long)]
    pub(crate) no_hard_links: bool,

    /// Archive: keep everything that applies (--xattrs --owner --specials; links
    /// and hard links are kept anyway)
    #[arg(long, short = 'a')]
    pub(crate) archive: bool,

    /// Send extended attributes (`user.*`; every namespace as root)
    #[arg(long, short = 'X')]
    pub(crate) xattrs: bool,

    /// Send owners and groups (by number and name); a receiver running as root
    /// applies them
    #[arg(long)]
    pub(crate) owner: bool,

    /// With --owner: send owners by number only, not by name
    #[arg(long)]
    pub(crate) numeric_ids: bool,

    /// Send fifos, sockets and device nodes (a receiver makes devices only as root)
    #[arg(long)]
    pub(crate) specials: bool,

    /// Into a server's DIR: replace files that exist there, and mirror a change of
    /// type (a directory replaces a file; a file an empty directory, or with
    /// --delete one holding entries); a plain receiver decides for itself, with
    /// `recv --overwrite`
    #[arg(long, short = 'f')]
    pub(crate) overwrite: bool,

    /// Compress with zstd on the way (LEVEL 1-19, default 3; the `=` is required);
    /// what does not compress goes raw
    #[arg(long, value_name = "LEVEL", num_args = 0..=1, require_equals = true,
          default_missing_value = "", env = "XFER_COMPRESS", value_parser = values::compress_level)]
    pub(crate) compress: Option<i32>,

    #[command(flatten)]
    pub(crate) mirror: MirrorArgs,

    #[command(flatten)]
    pub(crate) link: LinkArgs,

    #[command(flatten)]
    pub(crate) security: SecurityArgs,

    #[command(flatten)]
    pub(crate) auth: AuthArgs,

    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

const RECV_EXAMPLES: &str = "\
Examples:
  xfer recv --listen 9000 --dir ~/inbox          # prints a key for the sender if none is set
  xfer recv --listen 9000 --serve --key-file k   # many senders, until Ctrl-C
  xfer recv --listen 9000 --stdout | tar x       # a stream, unpacked on arrival
  xfer recv host:9000 --dir in                   # connect to `xfer send FILE --listen 9000`";

#[derive(Debug, Args)]
#[command(
    override_usage = "xfer recv [OPTIONS] --listen [ADDR:]PORT\n       xfer recv [OPTIONS] HOST:PORT",
    after_help = format!("{RECV_EXAMPLES}\n\n{EXIT_CODES}"),
)]
#[command(group = clap::ArgGroup::new("peer").required(true).args(["from", "listen"]))]
pub(crate) struct RecvArgs {
    /// Connect to a sender listening at HOST:PORT (`xfer send FILE... --listen PORT`)
    #[arg(value_name = "HOST:PORT", conflicts_with = "serve", value_parser = values::endpoint)]
    pub(crate) from: Option<Endpoint>,

    /// Write received files into DIR (created if missing)
    #[arg(long, short, value_name = "DIR", default_value = ".")]
    pub(crate) dir: PathBuf,

    /// Replace existing files that differ (atomically: readers see the old or the new
    /// file, never a mix; one of the offered size and modification time is `same` and
    /// stays, as rsync's quick check), and mirror a change of type: a directory replaces
    /// a file, link or special file, and one of those an empty directory (or with the sender's
    /// --delete one holding entries, which go with it)
    #[arg(long)]
    pub(crate) overwrite: bool,

    /// Write the one received file to standard output instead of DIR (an offer of
    /// several files or a directory is refused). The bytes are out before they are
    /// verified: on a checksum failure xfer exits 5 and the output must be discarded
    #[arg(long, conflicts_with_all = ["dir", "overwrite", "serve"])]
    pub(crate) stdout: bool,

    /// Do not resume: discard partial data of interrupted transfers instead of
    /// continuing from it
    #[arg(long)]
    pub(crate) no_resume: bool,

    /// Refuse names that are awkward to show or type (backslash, control and
    /// format characters such as newline or U+202E, bytes that are not UTF-8), as
    /// `xfer serve` always does; without it any name the filesystem can hold arrives
    #[arg(long)]
    pub(crate) safe_names: bool,

    /// Remove partial data that no sender came back for after HOURS
    #[arg(long, value_name = "HOURS", default_value = "24", value_parser = units::hours)]
    pub(crate) keep_partial: Duration,

    /// As root: give files the owner and group numbers the sender sent, instead
    /// of the local users and groups of the same names
    #[arg(long)]
    pub(crate) numeric_ids: bool,

    /// Print one line per change this side makes on stdout (new, replaced, delta,
    /// new dir, new link, deleted, attrs), as `send -i` does, like rsync's -i;
    /// `change` events with --json
    #[arg(long, short = 'i', conflicts_with = "stdout")]
    pub(crate) itemize: bool,

    #[command(flatten)]
    pub(crate) link: LinkArgs,

    #[command(flatten)]
    pub(crate) security: SecurityArgs,

    #[command(flatten)]
    pub(crate) auth: AuthArgs,

    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// How a client meets a server.
#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    /// While nobody listens yet, keep retrying for SECS
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = units::seconds)]
    pub(crate) wait: Duration,

    /// The whole handshake must be over within SECS of connecting
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = units::positive_seconds)]
    pub(crate) handshake_timeout: Duration,

    /// Give up on a server that sends nothing we wait for, or takes nothing we
    /// send, for SECS
    #[arg(long, visible_alias = "timeout", value_name = "SECS", value_parser = units::positive_seconds)]
    pub(crate) idle_timeout: Option<Duration>,

    #[command(flatten)]
    pub(crate) auth: AuthArgs,

    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// How a client's transfers go (`get`, `shell`): not for requests that move no file.
#[derive(Debug, Args)]
pub(crate) struct TransferArgs {
    /// At most RATE bytes per second, averaged (as for send)
    #[arg(long, value_name = "RATE", value_parser = units::rate)]
    pub(crate) limit_rate: Option<u64>,

    /// The content hash that verifies each file: blake3 refuses a server without it;
    /// md5 uses MD5 even with a server that has BLAKE3 [default: blake3 whenever the
    /// server has it, else md5]
    #[arg(long, value_enum, value_name = "HASH", env = "XFER_HASH")]
    pub(crate) hash: Option<HashChoice>,

    /// Send whole files, never only what changed in a file the other side already
    /// holds (as rsync's -W)
    #[arg(long, short = 'W')]
    pub(crate) whole_file: bool,
}

const GET_EXAMPLES: &str = "\
Examples:
  xfer get files.example.org:9000:report.pdf --user alice        # into the current directory
  xfer get host:9000:photos host:9000:notes.txt ~/Downloads      # a directory and a file
  xfer get host:9000:'my docs/a file.txt' --stdout | less";

#[derive(Debug, Args)]
#[command(
    override_usage = "xfer get [OPTIONS] HOST:PORT:PATH... [LOCAL_DIR]",
    after_help = format!("{GET_EXAMPLES}\n\n{EXIT_CODES}"),
    // `send`'s words on --delete are about the receiver at the other end.
    mut_arg("delete", |arg| arg.help(GET_DELETE)),
    mut_arg("delete_excluded", |arg| arg.help(GET_DELETE_EXCLUDED)),
    mut_arg("ignore_times", |arg| arg.help(GET_IGNORE_TIMES)),
)]
pub(crate) struct GetArgs {
    /// What to download (HOST:PORT:PATH, a path of the user's home; IPv6 hosts in
    /// brackets, [::1]:9000:dir), then, optionally, the local directory to put it in
    /// [default: .]
    #[arg(value_name = "HOST:PORT:PATH... [LOCAL_DIR]", required = true, num_args = 1..)]
    pub(crate) operands: Vec<String>,

    /// Replace local files that exist, and mirror a change of type (a directory
    /// replaces a file, link or special file; one of those an empty directory, or with --delete
    /// one holding entries)
    #[arg(long, short = 'f')]
    pub(crate) overwrite: bool,

    /// Write the one file to standard output (its bytes are out before they are verified)
    #[arg(long, conflicts_with = "overwrite")]
    pub(crate) stdout: bool,

    /// Do not resume: discard partial data of interrupted downloads
    #[arg(long)]
    pub(crate) no_resume: bool,

    /// Bring back extended attributes (`user.*`, all a server keeps of `send -X`):
    /// each file and directory gets those of its copy on the server; a server too
    /// old to send them is said once
    #[arg(long, short = 'X', conflicts_with = "stdout")]
    pub(crate) xattrs: bool,

    #[command(flatten)]
    pub(crate) mirror: MirrorArgs,

    #[command(flatten)]
    pub(crate) transfer: TransferArgs,

    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

#[derive(Debug, Args)]
#[command(override_usage = "xfer ls [OPTIONS] HOST:PORT[:PATH]")]
pub(crate) struct LsArgs {
    /// The server, and the directory (or file) to list [default: the home]
    #[arg(value_name = "HOST:PORT[:PATH]")]
    pub(crate) target: String,

    /// Long listing: kind and permissions, size, modification time (UTC), name
    #[arg(short = 'l')]
    pub(crate) long: bool,

    /// Sizes in KiB, MiB, GiB
    #[arg(short = 'h', long = "human-readable")]
    pub(crate) human: bool,

    /// Recursive: every directory beneath too, each entry named by its path
    /// relative to the one listed (a directory before what it holds)
    #[arg(short = 'R', long, conflicts_with = "usage")]
    pub(crate) recursive: bool,

    /// Show the bytes and entries (files, directories, links) used against the
    /// user's quota instead
    #[arg(long)]
    pub(crate) usage: bool,

    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    pub(crate) help: Option<bool>,

    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

#[derive(Debug, Args)]
#[command(override_usage = "xfer rm [OPTIONS] HOST:PORT:PATH...")]
pub(crate) struct RmArgs {
    /// What to remove: HOST:PORT:PATH, all on one server (a directory must be
    /// empty, unless -r)
    #[arg(value_name = "HOST:PORT:PATH", required = true, num_args = 1..)]
    pub(crate) targets: Vec<String>,

    /// Remove directories and everything inside them, deepest first, one entry
    /// at a time (links are never followed; the server removes none: one stops it)
    #[arg(short = 'r', short_alias = 'R', long)]
    pub(crate) recursive: bool,

    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RemotePathArgs {
    /// HOST:PORT:PATH on the server
    #[arg(value_name = "HOST:PORT:PATH")]
    pub(crate) target: String,

    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct MvArgs {
    /// HOST:PORT:OLD on the server
    #[arg(value_name = "HOST:PORT:OLD")]
    pub(crate) from: String,

    /// The new path, in the same home (from the home; HOST:PORT:NEW: the same server)
    #[arg(value_name = "NEW")]
    pub(crate) to: String,

    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

const SERVE_EXAMPLES: &str = "\
Examples:
  xfer serve --root /srv/xfer --listen 9000                      # one key (printed if none)
  xfer serve --root /srv/xfer --listen 9000 --users users.toml \\
      --realm files.example.org --pid-file /run/xfer.pid         # a key, home and quota per user
  kill -HUP $(cat /run/xfer.pid)                                 # read the users file again

Users file:
  [users.NAME]                   one table per user (TOML; chmod 600, as every key file)
  key_file = \"keys/NAME.key\"     the user's key, relative to the users file (xfer keygen PATH)
  key = \"64 hex digits\"          or the key inline: 64 lowercase hex digits, as `xfer keygen`
                                 and `xfer passwd` print; anything else is refused
  realm = \"REALM\"                the key comes from a password for REALM (`xfer passwd` writes
                                 it); must be the server's --realm
  home = \"DIR\"                   relative to --root; default: the user's name
  quota = \"20 GiB\"               bytes, or a number with KB/MB/GB/TB or KiB/MiB/GiB/TiB: the
                                 files' sizes, 4096 per directory, each link its target's length
  max_files = 100000             entries (files, directories, links) in the home, partial
                                 files included
  read_only = true               ls and get only (default false)
  max_sessions = 4               connections of this user at once (default: half of
                                 --max-conns, rounded up)";

#[derive(Debug, Args)]
#[command(after_help = format!("{SERVE_EXAMPLES}\n\n{EXIT_CODES}"))]
// The output flags are shared with send and recv; here they mean the server's log.
#[command(mut_arg("quiet", |arg| arg.help(
    "Log only errors (no start-up lines, no line per request; the port is still \
     said when it was 0)"
)))]
#[command(mut_arg("json", |arg| arg.help(
    "Log as newline-delimited JSON events on stdout: one per request and per transfer"
)))]
pub(crate) struct ServeArgs {
    /// The directory the homes are in (created if missing); without --users, the one home
    #[arg(long, value_name = "DIR")]
    pub(crate) root: PathBuf,

    /// Listen on [ADDR:]PORT (PORT alone: all interfaces; 0: any free port)
    #[arg(long, value_name = "[ADDR:]PORT")]
    pub(crate) listen: ListenAddr,

    /// The users file (TOML: key, home, quota and limits per user); SIGHUP reads it again
    #[arg(long, value_name = "FILE")]
    pub(crate) users: Option<PathBuf>,

    /// The name announced for keys derived from passwords (printed at start; a users-file
    /// `realm` must match it) [default: the host name]
    #[arg(long, value_name = "NAME")]
    pub(crate) realm: Option<String>,

    /// Without --users: read the one key from PATH [default: $XFER_KEY; none: one is
    /// generated and printed]
    #[arg(long, value_name = "PATH", conflicts_with = "users")]
    pub(crate) key_file: Option<PathBuf>,

    /// Authenticated connections at once; more are refused as busy. A user whose
    /// table sets no max_sessions may hold half of them (rounded up)
    #[arg(long, value_name = "N", default_value = "64", value_parser = units::count)]
    pub(crate) max_conns: usize,

    /// Connections still in the handshake from one address; a newer one cuts the
    /// oldest that has waited a second
    #[arg(long, value_name = "N", default_value = "32", value_parser = units::count)]
    pub(crate) max_pending_per_address: usize,

    /// Close a connection that makes no request (or takes nothing we send) for SECS
    #[arg(long, visible_alias = "timeout", value_name = "SECS", default_value = "300", value_parser = units::positive_seconds)]
    pub(crate) idle_timeout: Duration,

    /// The whole handshake must be over within SECS of connecting
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = units::positive_seconds)]
    pub(crate) handshake_timeout: Duration,

    /// At most RATE bytes per second per connection and direction
    #[arg(long, value_name = "RATE", value_parser = units::rate)]
    pub(crate) limit_rate: Option<u64>,

    /// Remove partial data of cut uploads that no client came back for after HOURS
    #[arg(long, value_name = "HOURS", default_value = "24", value_parser = units::hours)]
    pub(crate) keep_partial: Duration,

    /// Write the server's PID to PATH at start (removed at exit): `kill -HUP $(cat PATH)`
    /// then reaches this server and no other xfer
    #[arg(long, value_name = "PATH")]
    pub(crate) pid_file: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// `xfer shell --help` ends with every command the shell takes.
fn shell_help() -> String {
    let mut text = String::from("Commands at the prompt:\n");
    text.push_str(&crate::shell::COMMANDS.listed());
    text.push_str(
        "\nExamples:\n  xfer shell files.example.org:9000 --user alice\n  \
         xfer shell host:9000:photos --user alice               # starts in photos/\n  \
         xfer shell host:9000 --user alice -b nightly.xfer      # a script: stops at the first failure\n  \
         printf 'cd photos\\nget -f 2024\\n' | xfer shell host:9000 --user alice\n\n",
    );
    text.push_str(EXIT_CODES);
    text
}

#[derive(Debug, Args)]
#[command(after_help = shell_help())]
pub(crate) struct ShellArgs {
    /// The server (HOST:PORT), optionally with a directory of the home to start in
    /// (HOST:PORT:DIR)
    #[arg(value_name = "HOST:PORT[:DIR]")]
    pub(crate) target: String,

    /// Run the commands of FILE (`-`: standard input) instead of prompting: each is
    /// echoed after the prompt, and the first that fails ends the script with its
    /// exit code, unless its line starts with `-`
    #[arg(short = 'b', long = "batch", value_name = "FILE")]
    pub(crate) batch: Option<PathBuf>,

    /// Show progress bars in a script too
    #[arg(long)]
    pub(crate) progress: bool,

    #[command(flatten)]
    pub(crate) transfer: TransferArgs,

    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PasswdArgs {
    /// The user name
    #[arg(value_name = "NAME")]
    pub(crate) user: String,

    /// The server's realm (what `xfer serve --realm` announces; by default its host name)
    #[arg(long, value_name = "REALM")]
    pub(crate) realm: String,
}

#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Write the key to PATH (created with mode 0600, never replaced) instead of standard output
    #[arg(value_name = "PATH")]
    pub(crate) path: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// The subcommand whose page to print (`xfer man send` is xfer-send(1));
    /// without one, xfer(1)
    #[arg(value_name = "COMMAND")]
    pub(crate) command: Option<String>,

    /// Write every page (xfer.1, xfer-send.1, ...) into DIR instead
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub(crate) dir: Option<PathBuf>,
}
