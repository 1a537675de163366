//! `usage`: the bytes and entries (files, directories, links) in the user's home
//! against their quota (the wire keeps the name `files`).

use anyhow::Result;

use super::Context;
use crate::net::TcpConnection;
use crate::proto::message::{Message, Usage};

pub(crate) fn run(context: &Context<'_>, conn: &mut TcpConnection) -> Result<()> {
    let (used, limits) = context.ledger.usage();
    conn.writer.write_message(&Message::Usage(Usage {
        bytes: Some(used.bytes),
        files: Some(used.files),
        quota_bytes: Some(limits.bytes),
        quota_files: Some(limits.files),
    }))?;
    conn.writer.flush()?;
    context.log(
        "usage",
        Ok(format!(
            "{} bytes, {}",
            used.bytes,
            crate::ui::report::entries(used.files as usize)
        )),
    );
    Ok(())
}
