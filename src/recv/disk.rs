//! The receiver's disk thread: it writes each arriving file where it goes (a part
//! file, or standard output), makes verified files durable in groups (one flush for
//! the group's data, the renames, one flush for the names), and only then sends
//! their acknowledgements, so an `ok` always means "durable under its final name".
//! It owns the writing half of the connection while data flows.
//!
//! Grouping is what makes many small files cheap: 10 000 files cost a few dozen
//! filesystem flushes instead of 20 000 fsyncs. A large file is committed as soon
//! as it is complete, and an idle moment commits whatever is waiting.

use std::cell::RefCell;
use std::io::Write;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use anyhow::{Context, Result};

use super::Shared;
use super::plan::{Claim, Planned};
use crate::conn::FrameWriter;
use crate::error::{Classify, Kind};
use crate::escape::escape;
use crate::frame::{self, EntryKind, Message};
use crate::handshake::FileFacts;
use crate::pool::Giver;
use crate::report::{self, Failed, Reporter, Verified};
use crate::sink::{PartFile, Refusal, Resolver, Resume, StdoutSink, TargetDir};

use super::Destination;

/// Files made durable together, at most. Measured with 10 000 files of 4 KiB:
/// each group costs two filesystem flushes (about 3 ms here), and 256 per group
/// spent 0.3 s of 1.1 s flushing.
const GROUP_FILES: usize = 1024;
/// Bytes made durable together, at most; a file this large is committed alone.
const GROUP_BYTES: u64 = 32 << 20;
/// A group waiting this long without new work is committed anyway.
const GROUP_WAIT: Duration = Duration::from_millis(100);

/// What the socket thread asks of the disk thread, in order.
pub enum Job {
    /// Entry `index`'s data starts at byte `offset`: open where it goes.
    Open { index: usize, offset: u64 },
    /// The next bytes of the open entry; the buffer goes back to the pool after.
    Write { buffer: Vec<u8>, len: usize },
    /// The open entry is complete and was checked: keep it, or drop it and say why.
    Close {
        index: usize,
        verdict: Result<Arrived, Refusal>,
    },
    /// The sender gave up an entry before its data: report it (it gets no ack).
    GaveUp(Failed),
}

/// A complete file that verified.
#[derive(Debug, Clone, Copy)]
pub struct Arrived {
    pub size: u64,
    pub md5: [u8; 16],
}

/// A verified file waiting for its group to be made durable.
struct Pending {
    index: usize,
    part: PartFile,
    arrived: Arrived,
}

/// Runs the disk thread until the socket thread hangs up, then commits what is left.
/// An error here (standard output closed) ends the session.
pub fn run<W: Write>(
    jobs: Receiver<Job>,
    giver: Giver,
    writer: &mut FrameWriter<W>,
    planned: &[Planned],
    claims: Vec<Option<Claim<'_>>>,
    context: &Shared<'_>,
    reporter: &Reporter,
) -> Result<()> {
    let acks = Acks {
        planned,
        claims: RefCell::new(claims),
        context,
        reporter,
    };
    let mut resolver = match context.destination {
        Destination::Dir(target) => Some(target.resolver()),
        Destination::Stdout => None,
    };
    let mut open: Option<Landing> = None;
    let mut group: Vec<Pending> = Vec::new();
    // Bytes in `group`; a commit empties both.
    let mut group_bytes = 0;
    loop {
        let job = match jobs.recv_timeout(GROUP_WAIT) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                acks.commit(&mut group, writer)?;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return acks.commit(&mut group, writer),
        };
        match job {
            Job::Open { index, offset } => {
                open = Some(open_landing(
                    &planned[index],
                    offset,
                    resolver.as_mut(),
                    context,
                )?);
            }
            Job::Write { buffer, len } => {
                if let Some(landing) = &mut open {
                    landing.write(&buffer[..len])?;
                }
                giver.give(buffer);
            }
            Job::GaveUp(failed) => reporter.failed(failed),
            Job::Close { index, verdict } => {
                let landing = open
                    .take()
                    .expect("the socket thread opens before it closes");
                match (verdict, landing) {
                    (Err(refusal), landing) => {
                        landing.discard();
                        acks.send(writer, index, Err(refusal))?;
                        writer.flush()?;
                    }
                    (Ok(_), Landing::Part(Err(refusal))) => {
                        acks.send(writer, index, Err(refusal))?;
                        writer.flush()?;
                    }
                    (Ok(arrived), Landing::Stdout(_)) => {
                        acks.send(writer, index, Ok(arrived))?;
                        writer.flush()?;
                    }
                    (Ok(arrived), Landing::Part(Ok(mut part))) => {
                        let mtime = planned[index].entry.mtime;
                        if arrived.size >= GROUP_BYTES {
                            // Alone: fsync of the file itself, no group to wait for.
                            let result = part.commit(mtime, context.options.overwrite);
                            acks.send(writer, index, result.map(|()| arrived))?;
                            writer.flush()?;
                            continue;
                        }
                        if let Err(refusal) = part.seal(mtime) {
                            acks.send(writer, index, Err(refusal))?;
                            writer.flush()?;
                            continue;
                        }
                        group.push(Pending {
                            index,
                            part,
                            arrived,
                        });
                        group_bytes += arrived.size;
                        if group.len() >= GROUP_FILES || group_bytes >= GROUP_BYTES {
                            acks.commit(&mut group, writer)?;
                            group_bytes = 0;
                        }
                    }
                }
            }
        }
    }
}

/// What acknowledging needs besides the writer.
struct Acks<'a, 'c> {
    planned: &'a [Planned<'c>],
    /// Each entry's claim on its path, released just before its acknowledgement.
    claims: RefCell<Vec<Option<Claim<'c>>>>,
    context: &'a Shared<'a>,
    reporter: &'a Reporter,
}

impl Acks<'_, '_> {
    /// Makes a group durable under its final names, then acknowledges each file.
    fn commit<W: Write>(
        &self,
        group: &mut Vec<Pending>,
        writer: &mut FrameWriter<W>,
    ) -> Result<()> {
        if group.is_empty() {
            return Ok(());
        }
        let Destination::Dir(target) = self.context.destination else {
            unreachable!("only part files wait in groups");
        };
        let (done, parts): (Vec<_>, Vec<_>) = std::mem::take(group)
            .into_iter()
            .map(|p| ((p.index, p.arrived), p.part))
            .unzip();
        let results = target.commit_all(parts, self.context.options.overwrite);
        for ((index, arrived), result) in done.into_iter().zip(results) {
            self.send(writer, index, result.map(|()| arrived))?;
        }
        writer.flush()
    }

    /// Sends entry `index`'s `ok` (with its MAC) or `error`, and reports it.
    fn send<W: Write>(
        &self,
        writer: &mut FrameWriter<W>,
        index: usize,
        outcome: Result<Arrived, Refusal>,
    ) -> Result<()> {
        let path = &self.planned[index].entry.path;
        // The file is final (or gone) now: another session may take its path, and
        // whoever sees this acknowledgement finds it there.
        self.claims.borrow_mut()[index] = None;
        let index = index as u64;
        let reply = match outcome {
            Ok(Arrived { size, md5 }) => {
                let facts = FileFacts {
                    index,
                    size,
                    md5: &md5,
                    path,
                };
                self.reporter.verified(Verified {
                    path: path.clone(),
                    size,
                    md5: frame::hex(&md5),
                });
                Message::Ok {
                    index,
                    mac: self.context.session_key.ok_mac(facts),
                }
            }
            Err(mut refusal) => {
                if matches!(self.context.destination, Destination::Stdout) {
                    refusal.message.push_str(
                        "; the bytes already written to standard output are NOT verified: discard them",
                    );
                }
                self.reporter.failed(Failed {
                    path: path.clone(),
                    code: refusal.code,
                    why: refusal.to_string(),
                });
                Message::Error {
                    code: refusal.code,
                    message: refusal.message,
                    index: Some(index),
                }
            }
        };
        writer.write_message(&reply)
    }
}

/// Where entry `item`'s data starting at `offset` goes.
fn open_landing(
    item: &Planned,
    offset: u64,
    resolver: Option<&mut Resolver<'_>>,
    context: &Shared<'_>,
) -> Result<Landing> {
    Ok(match resolver {
        Some(resolver) => {
            let components: Vec<&str> = item.components.iter().map(String::as_str).collect();
            let resume = match item.entry.size {
                Some(size) if context.options.resume => Some(Resume { size, offset }),
                _ => None,
            };
            Landing::Part(resolver.create_part(
                &item.entry.path,
                &components,
                item.entry.mode,
                resume,
            ))
        }
        None => Landing::Stdout(
            StdoutSink::open()
                .context("cannot write to standard output")
                .classify(Kind::Io)?,
        ),
    })
}

/// Where one file's bytes go while it arrives.
enum Landing {
    /// A part file in the target directory, or why there is none (its data is
    /// then read and dropped, to stay in step with the sender).
    Part(Result<PartFile, Refusal>),
    /// Standard output: a write failure there ends the session.
    Stdout(StdoutSink),
}

impl Landing {
    /// Writes the next bytes. A part file that cannot be written becomes the
    /// refusal for its entry (the rest of its data is dropped); standard output
    /// that cannot be written ends the session.
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Landing::Part(Ok(part)) => {
                if let Err(refusal) = part.write_all(bytes) {
                    // Not kept for resuming: the disk is full or failing.
                    std::mem::replace(self, Landing::Part(Err(refusal))).discard();
                }
                Ok(())
            }
            Landing::Part(Err(_)) => Ok(()),
            Landing::Stdout(out) => out
                .write_all(bytes)
                .context("cannot write to standard output")
                .classify(Kind::Io),
        }
    }

    /// Drops data that must not be kept, not even for resuming.
    fn discard(self) {
        if let Landing::Part(Ok(part)) = self {
            part.discard();
        }
    }
}

/// Directory modes and times last: writing their contents changed the times, and a
/// read-only mode would have stopped the writing. Deepest first.
pub fn finish_dirs(planned: &[Planned], target: &TargetDir) {
    let mut resolver = target.resolver();
    let dirs = planned
        .iter()
        .rev()
        .filter(|p| p.entry.kind == EntryKind::Dir && !p.components.is_empty());
    for item in dirs {
        let components: Vec<&str> = item.components.iter().map(String::as_str).collect();
        if let Err(refusal) = resolver.finish_dir(
            &item.entry.path,
            &components,
            item.entry.mode,
            item.entry.mtime,
        ) {
            report::warn(&escape(&refusal.message));
        }
    }
}
