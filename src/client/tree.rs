//! Remote trees, walked on the client's side of the protocol with one `list` per
//! directory: listed whole (`ls -R`), or removed deepest first (`rm -r`), one
//! `remove` request per entry, so the server keeps its one strict rule (a file, or
//! an empty directory) and its quota accounting per entry. A link is listed by the
//! server as kind `other`: it is an entry, never descended into; its `remove` is
//! refused (`denied`, section 9), which stops `rm -r` there. Nothing here looks at
//! the local disk.

use anyhow::Result;

use super::Client;
use crate::error::{Kind, fail};
use crate::escape::escape;
use crate::proto::message::{Item, ItemKind};

/// How deep a tree is followed (a server listing directories without end cannot
/// run the client out of memory or stack).
const MAX_DEPTH: usize = 1024; // directory levels

impl Client {
    /// `list` of `path` and of every directory beneath it: each item named by its
    /// path relative to `path`, a directory before what it holds.
    pub(crate) fn list_tree(&mut self, path: &str) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        self.list_into(path, "", 0, &mut items)?;
        Ok(items)
    }

    fn list_into(
        &mut self,
        path: &str,
        relative: &str,
        depth: usize,
        items: &mut Vec<Item>,
    ) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(fail(
                Kind::Protocol,
                format!("{} is over {MAX_DEPTH} directories deep", escape(path)),
            ));
        }
        for mut item in self.list(path)? {
            let is_dir = item.kind == ItemKind::Dir;
            let name = std::mem::take(&mut item.name);
            item.name = join(relative, &name);
            let inner = item.name.clone();
            items.push(item);
            if is_dir {
                self.list_into(&join(path, &name), &inner, depth + 1, items)?;
            }
        }
        Ok(())
    }

    /// Removes `path` and, if it is a directory, everything inside it. Stops at the
    /// first refusal, which names the entry.
    pub(crate) fn remove_tree(&mut self, path: &str) -> Result<()> {
        if path.is_empty() {
            return Err(fail(
                Kind::Usage,
                "rm -r: the home itself cannot be removed (name what is inside it)",
            ));
        }
        // What `path` is, from its parent's listing: listing `path` itself cannot
        // tell a file from a directory holding one entry of the same name.
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let is_dir = self
            .list(parent)?
            .iter()
            .any(|item| item.name == name && item.kind == ItemKind::Dir);
        if is_dir {
            // Backwards, every directory comes after all it holds.
            for item in self.list_tree(path)?.iter().rev() {
                self.remove(&join(path, &item.name))?;
            }
        }
        self.remove(path)
    }
}

/// `dir/name`, or `name` in the home.
fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}
