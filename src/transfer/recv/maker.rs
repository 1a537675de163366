//! Making small files, on two threads: the disk thread hands every other batch of
//! small files (`small.rs`) to a helper thread, makes the next itself meanwhile, and
//! then takes both in order. To make one is the costly part of a small file on the
//! receiver (an unnamed file created, written, given its mode and time: almost all
//! of it in the kernel, most of it allocating the inode), and one thread doing all
//! of it left the machine's other core to wait. Everything after (groups, flushes,
//! answers) stays on the disk thread, in entry order.

use super::in_the_way;
use super::jobs::{Arrived, SmallFile};
use super::plan::Planned;
use super::shared::Shared;
use super::worker::Worker;
use crate::fs::Refusal;
use crate::fs::path::check_path_bytes;
use crate::fs::sink::{PartFile, Resolver, TargetDir};

/// What came of making one small file: the file, written and sealed (mode and
/// time applied), and what arrived; or why it is refused (its checks failed, or
/// the disk would not take it).
pub(crate) type Made = (usize, Result<(Arrived, PartFile), Refusal>);

/// The disk thread's end of the helper thread: [`Worker::ask`] a batch (its arena
/// and files), [`Worker::answer`] the arena back and each file's outcome in order.
pub(crate) type Helper<'scope> = Worker<'scope, (Vec<u8>, Vec<SmallFile>), (Vec<u8>, Vec<Made>)>;

/// Starts the helper thread in `scope`, making files of `planned` in `target`.
pub(crate) fn start<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    target: &'scope TargetDir,
    planned: &'scope [Planned<'_>],
    shared: &'scope Shared<'_>,
) -> std::io::Result<Helper<'scope>> {
    Worker::start(
        scope,
        "make",
        || target.resolver(),
        |resolver: &mut Resolver<'_>, (arena, files): (Vec<u8>, Vec<SmallFile>)| {
            let made = make_all(&arena, files, resolver, planned, shared);
            (arena, made)
        },
    )
}

/// Makes every file of a batch whose bytes are in `arena`, in order.
pub(crate) fn make_all(
    arena: &[u8],
    files: Vec<SmallFile>,
    resolver: &mut Resolver<'_>,
    planned: &[Planned<'_>],
    shared: &Shared<'_>,
) -> Vec<Made> {
    files
        .into_iter()
        .map(|file| {
            let made = file.verdict.and_then(|arrived| {
                let part = make(&arena[file.bytes], &planned[file.index], resolver, shared)?;
                Ok((arrived, part))
            });
            (file.index, made)
        })
        .collect()
}

/// Creates the file `item`'s verified `bytes` go to (never resumable: a small file
/// has no partial), writes them and applies its mode and time.
fn make(
    bytes: &[u8],
    item: &Planned<'_>,
    resolver: &mut Resolver<'_>,
    shared: &Shared<'_>,
) -> Result<PartFile, Refusal> {
    let path = item.entry.shown_path();
    let path_bytes = item.entry.path_bytes();
    let components = check_path_bytes(&path_bytes, shared.settings.names)
        .expect("planned paths passed the policy");
    let mut part = resolver.create_part(&path, &components, None)?;
    if !bytes.is_empty() {
        part.write_all(bytes)?;
    }
    part.seal(&item.entry)?;
    if item.type_change {
        let at = (&components[..], &*path);
        in_the_way::make_room(&mut part, shared, resolver.target(), at, item.dir_seen)?;
    }
    Ok(part)
}
