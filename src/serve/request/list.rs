//! `list`: the children of a directory, sorted by name, streamed in as many
//! `listing` frames as they need; or the one item a path that is not a directory
//! is (a symlink there is `other`).

use anyhow::Result;

use super::Context;
use super::{refuse, shown};
use crate::fs::home::Listing;
use crate::net::TcpConnection;
use crate::transfer::offer::ListWriter;

pub(crate) fn run(context: &Context<'_>, conn: &mut TcpConnection, path: &str) -> Result<()> {
    let action = format!("list {}", shown(path));
    let listing = match context.home.list(path, conn.negotiated.meta()) {
        Ok(listing) => listing,
        Err(refusal) => return refuse(context, conn, &action, refusal),
    };
    match send(conn, &listing) {
        Ok(count) => {
            let entries = match count {
                1 => "1 entry".to_string(),
                n => format!("{n} entries"),
            };
            context.log(&action, Ok(entries));
            Ok(())
        }
        // The client went away or stopped reading: say so, then end the connection.
        Err(err) => {
            context.log(&action, Err(format!("{err:#}")));
            Err(err)
        }
    }
}

/// Streams the listing's items in `listing` frames; returns how many went out.
fn send(conn: &mut TcpConnection, listing: &Listing) -> Result<usize> {
    let mut frames = ListWriter::listing(&mut conn.writer);
    let mut count = 0;
    for item in listing.items() {
        frames.push(&item)?;
        count += 1;
    }
    frames.finish_listing()?;
    conn.writer.flush()?;
    Ok(count)
}
