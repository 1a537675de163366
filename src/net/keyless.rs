//! A listener started without a key: it makes one up (`crate::key`) and prints it,
//! with the command line its peer can paste. Owns only that announcement; it must
//! not reach for sockets or sessions.

use anyhow::Result;

use crate::key::{self, KEY_ENV, Key};
use crate::proto::message::Role;
use crate::stderr;

/// Makes a key for a listener started without one and prints it, with the command
/// line its peer can paste.
pub(crate) fn generate_for_listener(local: std::net::SocketAddr, role: Role) -> Result<Key> {
    let (key, generated) = key::generate_for_start_up()?;
    let at = reachable_at(local);
    let peer_command = match role {
        Role::Receiver | Role::Server => format!("xfer send FILE... {at}"),
        Role::Sender | Role::Client => format!("xfer recv {at}"),
    };
    let what = match role {
        Role::Server => "server",
        Role::Receiver => "receiver",
        _ => "sender",
    };
    stderr::line(&format!(
        "xfer: no key given (--key-file or ${KEY_ENV}); generated one for this {what}:\n\n    \
         {KEY_ENV}={generated}\n\nOn the other machine, run:\n\n    {KEY_ENV}={generated} {peer_command}\n",
    ));
    Ok(key)
}

/// Where a peer reaches a listener bound to `local`: the bound address itself, but
/// for a wildcard (`0.0.0.0`, `::`), which no peer can dial: then the host's name.
fn reachable_at(local: std::net::SocketAddr) -> String {
    if !local.ip().is_unspecified() {
        return local.to_string();
    }
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    format!("{host}:{}", local.port())
}
