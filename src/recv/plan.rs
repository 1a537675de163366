//! Deciding an offer: every entry's path checked, duplicates and paths another
//! session is receiving refused, existing files and what will not fit refused,
//! directories created, and resumable data found. The answer is the plan.

use std::collections::HashSet;
use std::sync::Mutex;

use anyhow::Result;
use indicatif::HumanBytes;
use md5::{Digest, Md5};

use super::Shared;
use crate::error::{Kind, fail};
use crate::escape::escape;
use crate::frame::{self, Decision, Entry, EntryKind, ErrorCode};
use crate::report::{Failed, Reporter};
use crate::sink::{self, Refusal, Resolver, TargetDir};

/// Paths being received right now, across the sessions of this process, so two
/// senders of the same path never write into one partial file.
#[derive(Default)]
pub struct Claims(Mutex<HashSet<String>>);

/// A claimed path, released when dropped.
pub struct Claim<'a> {
    claims: &'a Claims,
    path: String,
}

impl Claims {
    pub fn claim(&self, path: &str) -> Option<Claim<'_>> {
        let mut held = self.0.lock().expect("no panics while holding the lock");
        held.insert(path.to_string()).then(|| Claim {
            claims: self,
            path: path.to_string(),
        })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.claims
            .0
            .lock()
            .expect("no panics while holding the lock")
            .remove(&self.path);
    }
}

/// One entry of the offer, checked and decided.
pub struct Planned<'c> {
    pub entry: Entry,
    /// The path's components, from `sink::check_path`.
    pub components: Vec<String>,
    /// Will data for this entry come?
    pub expects_data: bool,
    /// Resumable data already here: its length and the MD5 state after it.
    pub resume_from: Option<(u64, Md5)>,
    /// Keeps other sessions of this process off the same path until we are done.
    pub claim: Option<Claim<'c>>,
}

impl Planned<'_> {
    fn new(entry: Entry, expects_data: bool) -> Self {
        Planned {
            entry,
            components: Vec::new(),
            expects_data,
            resume_from: None,
            claim: None,
        }
    }
}

impl Planned<'_> {
    /// Where this entry's data starts when the sender agrees to resume.
    pub fn resume_offset(&self) -> u64 {
        self.resume_from.as_ref().map_or(0, |(len, _)| *len)
    }
}

/// Decides every offered entry: checks its path, refuses duplicates, paths another
/// session is receiving, existing files and what will not fit, creates directories,
/// and finds resumable data.
pub fn plan<'c>(
    entries: Vec<Entry>,
    target: &TargetDir,
    context: &Shared<'c>,
    reporter: &Reporter,
) -> Vec<(Planned<'c>, Decision)> {
    let mut seen = HashSet::new();
    let mut free = target.free_space();
    let mut resolver = target.resolver();
    let mut planned = Vec::with_capacity(entries.len());
    for entry in entries {
        match decide(entry.clone(), &mut resolver, context, &mut seen, &mut free) {
            Ok(item) => {
                let decision = Decision::Send {
                    offset: item.resume_from.as_ref().map_or(0, |(len, _)| *len),
                    prefix_md5: item
                        .resume_from
                        .as_ref()
                        .map(|(_, prefix)| frame::hex(&prefix.clone().finalize())),
                };
                planned.push((item, decision));
            }
            Err(refusal) => {
                reporter.failed(Failed {
                    path: entry.path.clone(),
                    code: refusal.code,
                    why: refusal.to_string(),
                });
                let skip = Decision::Skip {
                    code: refusal.code,
                    message: refusal.message,
                };
                planned.push((Planned::new(entry, false), skip));
            }
        }
    }
    planned
}

/// The plan of a receiver writing to standard output: exactly one file, or nothing.
pub fn plan_stdout<'c>(entries: Vec<Entry>) -> Result<Vec<(Planned<'c>, Decision)>> {
    match entries.as_slice() {
        [entry] if entry.kind == EntryKind::File => {}
        [_] => {
            return Err(fail(
                Kind::Refused,
                "this receiver writes to standard output and takes one file, not a directory",
            ));
        }
        _ => {
            return Err(fail(
                Kind::Refused,
                format!(
                    "this receiver writes to standard output and takes exactly one file; the offer has {} entries",
                    entries.len()
                ),
            ));
        }
    }
    let send = Decision::Send {
        offset: 0,
        prefix_md5: None,
    };
    Ok(entries
        .into_iter()
        .map(|entry| (Planned::new(entry, true), send.clone()))
        .collect())
}

fn decide<'c>(
    entry: Entry,
    resolver: &mut Resolver<'_>,
    context: &Shared<'c>,
    seen: &mut HashSet<String>,
    free: &mut Option<u64>,
) -> Result<Planned<'c>, Refusal> {
    let shown = escape(&entry.path).into_owned();
    let components = sink::check_path(&entry.path)
        .map_err(|why| Refusal::new(ErrorCode::BadPath, format!("{shown}: {why}")))?;
    if !seen.insert(entry.path.clone()) {
        return Err(Refusal::new(
            ErrorCode::BadPath,
            format!("{shown}: offered twice"),
        ));
    }
    let mut claim = None;
    let mut resume_from = None;
    match entry.kind {
        EntryKind::Dir => resolver.create_dir(&entry.path, &components)?,
        EntryKind::File => {
            claim = Some(context.claims.claim(&entry.path).ok_or_else(|| {
                Refusal::new(
                    ErrorCode::Busy,
                    format!("{shown}: being received by another session"),
                )
            })?);
            resolver.probe_file(&entry.path, &components, context.options.overwrite)?;
            if let Some(size) = entry.size {
                if context.options.resume {
                    resume_from = resolver.find_partial(&entry.path, &components, size)?;
                } else {
                    resolver.discard_partial(&entry.path, &components, size);
                }
            }
            if let (Some(size), Some(left)) = (entry.size, free.as_mut()) {
                let needed = size - resume_from.as_ref().map_or(0, |(len, _)| *len);
                *left = left.checked_sub(needed).ok_or_else(|| {
                    Refusal::new(
                        ErrorCode::TooLarge,
                        format!(
                            "{shown}: needs {}, the receiver has {} free",
                            HumanBytes(needed),
                            HumanBytes(*left)
                        ),
                    )
                })?;
            }
        }
        EntryKind::Unknown => {
            return Err(Refusal::new(
                ErrorCode::Protocol,
                format!("{shown}: unsupported entry kind"),
            ));
        }
    }
    let expects_data = entry.kind == EntryKind::File;
    let components = components.into_iter().map(str::to_string).collect();
    Ok(Planned {
        entry,
        components,
        expects_data,
        resume_from,
        claim,
    })
}
