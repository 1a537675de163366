//! Tab completion at the shell's prompt: command names, remote names (from a
//! listing of the directory being completed, cached until something changes) for
//! the commands that take remote paths, and local names for those that take local
//! ones. Which is which is read from the commands' clap definition (`command/`).

use std::cell::RefCell;
use std::rc::Rc;

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::command::{self, Operands};
use super::session::Session;
use super::words::quote;
use crate::client::path::resolve;
use crate::proto::message::ItemKind;

/// The prompt's helper: completion only.
pub(crate) struct ShellHelper {
    session: Rc<RefCell<Session>>,
    files: FilenameCompleter,
}

impl ShellHelper {
    pub(crate) fn new(session: Rc<RefCell<Session>>) -> Self {
        ShellHelper {
            session,
            files: FilenameCompleter::new(),
        }
    }

    /// Remote names that complete `partial` (a path as typed, unquoted).
    fn remote(&self, partial: &str) -> Vec<Pair> {
        let (dir, prefix) = match partial.rsplit_once('/') {
            Some((dir, prefix)) => (format!("{dir}/"), prefix),
            None => (String::new(), partial),
        };
        let mut session = self.session.borrow_mut();
        let listed = resolve(&session.cwd, &dir);
        let Ok(items) = session.listing(&listed) else {
            return Vec::new();
        };
        items
            .iter()
            .filter(|item| item.name.starts_with(prefix))
            .map(|item| {
                let slash = if item.kind == ItemKind::Dir { "/" } else { "" };
                Pair {
                    display: format!("{}{slash}", item.name),
                    replacement: format!("{}{slash}", quote(&format!("{dir}{}", item.name))),
                }
            })
            .collect()
    }
}

/// Where the word under the cursor starts (after the last unescaped space), and
/// that word with its backslashes removed.
fn current_word(before: &str) -> (usize, String) {
    let mut start = 0;
    let mut escaped = false;
    for (at, c) in before.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c.is_whitespace() {
            start = at + c.len_utf8();
        }
    }
    let mut word = String::new();
    let mut chars = before[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            '\'' | '"' => {}
            c => word.push(c),
        }
    }
    (start, word)
}

/// The commands whose names start with `prefix`.
fn command_names(prefix: &str) -> Vec<Pair> {
    command::names()
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .map(|name| Pair {
            replacement: format!("{name} "),
            display: name,
        })
        .collect()
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let (start, word) = current_word(before);
        let command = before.split_whitespace().next().unwrap_or("");
        if start == 0 {
            return Ok((0, command_names(&word)));
        }
        match command::operands(command) {
            Some(Operands::Remote) => Ok((start, self.remote(&word))),
            Some(Operands::Local) => self.files.complete(line, pos, ctx),
            Some(Operands::Commands) => Ok((start, command_names(&word))),
            None => Ok((start, Vec::new())),
        }
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_word_is_unquoted() {
        assert_eq!(current_word("get my\\ fi"), (4, "my fi".into()));
        assert_eq!(current_word("ls "), (3, String::new()));
        assert_eq!(current_word("cd pho"), (3, "pho".into()));
        assert_eq!(current_word("ls"), (0, "ls".into()));
    }
}
