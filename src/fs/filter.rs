//! Filter rules with gitignore semantics ([`Filter`]): what `--exclude`,
//! `--include`, `--exclude-from` and the `.gitignore`/`.ignore` files of a tree
//! (`--gitignore`) leave out of an offer, and so what a mirroring receiver must
//! never remove. Matching is ripgrep's (`ignore::gitignore`); this file only says
//! which rule set a path is judged by. It knows offered paths, nothing of walks,
//! frames or disks, but for reading `--exclude-from` files ([`command_line_rules`]),
//! which the command line and the shell share.

use std::collections::HashMap;
use std::path::PathBuf;

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::escape::{escape, is_unprintable};
use crate::proto::message::{Mirror, RuleSet};

/// The files of a directory whose lines are rules for what lies beneath it, with
/// `--gitignore`; a later file's rules win over an earlier one's, as in ripgrep.
pub(crate) const IGNORE_FILES: [&str; 2] = [".gitignore", ".ignore"];

/// The rules of `--exclude`, `--exclude-from` and `--include` (of the command line
/// or of the shell's `put` and `get`), as gitignore lines in the order they judge:
/// every exclusion (the patterns, then each file's lines), then the re-inclusions,
/// so that `--include` takes back what an `--exclude` left out, whatever the order.
/// The error names a file that cannot be read, or a pattern that the filter cannot
/// compile or that can never match (see [`pattern_problem`]); a file's blank lines
/// and `#` comments are allowed, as gitignore allows them.
pub(crate) fn command_line_rules(
    exclude: &[String],
    exclude_from: &[PathBuf],
    include: &[String],
) -> Result<Vec<String>, String> {
    let checked = |flag: &str, pattern: &String| match pattern_problem(pattern) {
        Some(why) => Err(format!("{flag} \"{}\": {why}", as_typed(pattern))),
        None => Ok(pattern.clone()),
    };
    let mut rules = exclude
        .iter()
        .map(|pattern| checked("--exclude", pattern))
        .collect::<Result<Vec<_>, _>>()?;
    for file in exclude_from {
        let text = std::fs::read_to_string(file)
            .map_err(|err| format!("--exclude-from {}: {err}", file.display()))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r').to_string();
            if line.trim().is_empty() || line.starts_with('#') {
                rules.push(line);
                continue;
            }
            let flag = format!("--exclude-from {}: line {}", file.display(), number + 1);
            rules.push(checked(&flag, &line)?);
        }
    }
    for pattern in include {
        rules.push(format!("!{}", checked("--include", pattern)?));
    }
    for warning in shadowed_includes(&rules, include) {
        crate::stderr::warn(&warning);
    }
    Ok(rules)
}

/// What to say of each `--include` that can never apply because `rules` exclude a
/// directory its own path names (`--exclude logs/ --include logs/keep.log`): an
/// excluded directory is not entered (git's rule too). Only the literal leading
/// components of a pattern are looked at.
fn shadowed_includes(rules: &[String], include: &[String]) -> Vec<String> {
    let mut filter = Filter::default();
    if include.is_empty() || filter.add("", rules).is_err() {
        return Vec::new();
    }
    let literal = |part: &&&str| !part.contains(['*', '?', '[', '{', '\\']);
    let mut said = Vec::new();
    for pattern in include {
        let parts: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        let dirs = parts[..parts.len() - 1].iter().take_while(literal);
        let mut path = String::from("operand");
        for dir in dirs {
            path = format!("{path}/{dir}");
            if filter.excluded(path.as_bytes(), true) {
                let shown = &path["operand/".len()..];
                said.push(format!(
                    "--include \"{}\" cannot apply: the directory {shown}/ is excluded, and \
                     an excluded directory is not entered (exclude what it holds instead, \
                     --exclude '{shown}/*')",
                    as_typed(pattern)
                ));
                break;
            }
        }
    }
    said
}

/// What to say of each rule whose first component names a directory sent (its
/// name and path in `dirs`): `--exclude /src/cache/` while sending `src`. Rules
/// match below each directory sent, so that one names `src/src/cache`, which is
/// not what an rsync user means (rsync's top, for `src` without a slash, is the
/// directory holding it), and `--delete` then removes the `src/cache/` it was
/// meant to protect. Only an anchored rule (a `/` before its last character) whose
/// first component is literal, and only where that path is not there.
pub(crate) fn rules_naming_a_directory_sent(
    rules: &[String],
    dirs: &[(String, Option<PathBuf>)],
) -> Vec<String> {
    let mut said = Vec::new();
    for rule in rules.iter().filter(|rule| !rule.starts_with('#')) {
        let pattern = rule.strip_prefix('!').unwrap_or(rule);
        let below = pattern.trim_start_matches('/');
        let anchored = pattern.starts_with('/') || below.trim_end_matches('/').contains('/');
        let Some((first, rest)) = below.split_once('/') else {
            continue;
        };
        let Some((name, path)) = dirs.iter().find(|(name, _)| name == first) else {
            continue;
        };
        // A local directory is looked in: one that holds `first` may be meant.
        let there = path
            .as_ref()
            .map(|path| std::fs::symlink_metadata(path.join(first)).is_ok());
        let (verb, missing) = match there {
            Some(true) => continue,
            Some(false) => ("sent", ", which is not there"),
            None => ("fetched", ""),
        };
        if anchored && !rest.is_empty() {
            said.push(format!(
                "the rule \"{}\" is matched below each directory {verb}, so it names \
                 {name}/{below}{missing}; for {below} write \"/{rest}\" (the name of the \
                 directory {verb} is not part of the paths rules see)",
                as_typed(rule),
            ));
        }
    }
    said
}

/// Warns of each rule that names one of the directories among `files` (what is
/// sent) as its first component ([`rules_naming_a_directory_sent`]).
pub(crate) fn warn_of_rules_naming_a_directory_sent(rules: &[String], files: &[PathBuf]) {
    let dirs: Vec<(String, Option<PathBuf>)> = (files.iter())
        .filter(|file| file.is_dir())
        .filter_map(|file| Some((file.file_name()?.to_str()?.to_string(), Some(file.clone()))))
        .collect();
    for warning in rules_naming_a_directory_sent(rules, &dirs) {
        crate::stderr::warn(&warning);
    }
}

/// The same for a `get` of the server's `paths` (relative to the home), whose
/// tree cannot be looked in here.
pub(crate) fn warn_of_rules_naming_a_path_fetched(rules: &[String], paths: &[String]) {
    let dirs: Vec<(String, Option<PathBuf>)> = (paths.iter())
        .filter_map(|path| path.trim_end_matches('/').rsplit('/').next())
        .filter(|name| !name.is_empty() && *name != "." && *name != "..")
        .map(|name| (name.to_string(), None))
        .collect();
    for warning in rules_naming_a_directory_sent(rules, &dirs) {
        crate::stderr::warn(&warning);
    }
}

/// Why the gitignore line `pattern`, given where a pattern is expected, is no
/// rule: the filter cannot compile it (the reason `globset` gives: an unclosed
/// `[` class, which `ignore` would take as a literal `[` where git's own matcher
/// never matches, an invalid range, a dangling `\`, an unclosed `{`), or it can
/// never match anything (empty, a `#` comment, nothing but `!` and `/`).
fn pattern_problem(pattern: &str) -> Option<String> {
    let trimmed = match pattern.ends_with("\\ ") {
        true => pattern,
        false => pattern.trim_end(),
    };
    if trimmed.is_empty() {
        return Some("an empty pattern matches nothing".into());
    }
    if trimmed.starts_with('#') {
        return Some(
            "a pattern beginning with # is a comment in gitignore syntax and matches \
             nothing (write \\# for a name that begins with #)"
                .into(),
        );
    }
    let name = trimmed.strip_prefix('!').unwrap_or(trimmed);
    if name.trim_matches('/').is_empty() {
        return Some(
            "it names nothing: a leading ! and leading or trailing / only qualify a name".into(),
        );
    }
    let mut strict = GitignoreBuilder::new("");
    strict.allow_unclosed_class(false);
    strict
        .add_line(None, pattern)
        .err()
        .map(|err| glob_error(&err))
}

/// A pattern from this side's own command line or file, shown as typed (a `\` is
/// part of the syntax: doubling it would show another pattern), unless it holds a
/// character that must not reach a terminal raw.
fn as_typed(pattern: &str) -> std::borrow::Cow<'_, str> {
    match pattern.chars().any(is_unprintable) {
        true => escape(pattern),
        false => pattern.into(),
    }
}

/// What `ignore` says is wrong with a line, without its own wrapping.
fn glob_error(err: &ignore::Error) -> String {
    match err {
        ignore::Error::Glob { err, .. } => err.clone(),
        other => other.to_string(),
    }
}

/// What a `get` asks the server to filter and echo (section 17.5), if anything:
/// `rules` as the set `""` (a line that is no valid pattern is refused here, before
/// anything is asked), `delete` and `dry_run`.
pub(crate) fn get_request(
    rules: &[String],
    delete: bool,
    dry_run: bool,
) -> Result<Option<Mirror>, String> {
    if rules.is_empty() && !delete && !dry_run {
        return Ok(None);
    }
    let mut filter = Filter::default();
    filter.add("", rules)?;
    // `--delete-excluded` stays with the client, which deletes on its own side.
    Ok(Some(Mirror {
        delete,
        dry_run,
        rules: filter.wire().to_vec(),
        delete_excluded: false,
        // The client is the receiver: the kept entries are its own to say.
        report_kept: false,
        // And it quick-checks its own directory, or not (`get -I`).
        ignore_times: false,
    }))
}

/// The rule sets an offer is made with (section 17 of `docs/PROTOCOL.md`).
#[derive(Default)]
pub(crate) struct Filter {
    /// Compiled sets by the offered directory they hold beneath; `""` holds the
    /// command line's rules, below every operand's own name.
    sets: HashMap<String, Gitignore>,
    /// The same rules as they travel, in the order they were added.
    wire: Vec<RuleSet>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.wire).finish()
    }
}

impl Filter {
    /// The rules a mirroring sender sent. A line that is no valid pattern is the
    /// sender's fault: the message says which.
    pub(crate) fn from_wire(rules: &[RuleSet]) -> Result<Filter, String> {
        let mut filter = Filter::default();
        for set in rules {
            filter.add(&set.dir, &set.lines)?;
        }
        Ok(filter)
    }

    /// Adds `lines` (gitignore syntax: `#` comments, `!` re-includes, a trailing
    /// `/` for directories only, `**` across directories) as rules beneath the
    /// offered directory `dir` (`""`: the command line's). Rules for a directory
    /// that has some already are added after them, and so win.
    pub(crate) fn add(&mut self, dir: &str, lines: &[String]) -> Result<(), String> {
        let mut builder = GitignoreBuilder::new("");
        let before = self.wire.iter().filter(|set| set.dir == dir);
        for line in before.flat_map(|set| &set.lines).chain(lines) {
            builder
                .add_line(None, line)
                .map_err(|err| format!("filter rule \"{}\": {}", escape(line), glob_error(&err)))?;
        }
        let set = builder
            .build()
            .map_err(|err| format!("filter rules: {err}"))?;
        // A set without rules judges nothing: without any, `excluded` answers at
        // once (every walk adds the command line's rules, mostly none).
        match set.is_empty() {
            true => self.sets.remove(dir),
            false => self.sets.insert(dir.to_string(), set),
        };
        self.wire.push(RuleSet {
            dir: dir.to_string(),
            lines: lines.to_vec(),
        });
        Ok(())
    }

    /// The lines of `text` (an ignore file's) that are valid rules, and those that
    /// are not (git skips them too): each one's number (from 1), text and why.
    pub(crate) fn valid_lines(text: &str) -> (Vec<String>, Vec<(usize, String, String)>) {
        let mut bad = Vec::new();
        let mut lines = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            match GitignoreBuilder::new("").add_line(None, line) {
                Ok(_) => lines.push(line.to_string()),
                Err(err) => bad.push((number + 1, line.to_string(), glob_error(&err))),
            }
        }
        (lines, bad)
    }

    /// The rules as they travel in `mirror.rules`.
    pub(crate) fn wire(&self) -> &[RuleSet] {
        &self.wire
    }

    /// Whether the offered path `path` (its operand's name first) is left out. An
    /// operand itself never is: the user named it. The command line's rules judge
    /// first (matched against the path below the operand's name); then the rule
    /// set of the nearest directory above `path` that has one and matches it. A
    /// path that nothing matches is kept. A directory that is left out takes
    /// everything beneath it along: callers do not look inside. Names are matched
    /// as their bytes, as git and rsync match them: a name that is not UTF-8 is
    /// not read as U+FFFD, whose three bytes `?` would not match (nor `???` match
    /// one byte).
    pub(crate) fn excluded(&self, path: &[u8], is_dir: bool) -> bool {
        if self.sets.is_empty() {
            return false;
        }
        let Some(slash) = path.iter().position(|&byte| byte == b'/') else {
            return false;
        };
        if let Some(verdict) = self.verdict(b"", &path[slash + 1..], is_dir) {
            return verdict;
        }
        let mut dir = path;
        while let Some(up) = dir.iter().rposition(|&byte| byte == b'/') {
            dir = &path[..up];
            if let Some(verdict) = self.verdict(dir, &path[up + 1..], is_dir) {
                return verdict;
            }
        }
        false
    }

    /// What the set beneath `dir` says of `relative`: left out, kept, or nothing.
    /// Sets are keyed by the directory's name as text (`RuleSet::dir`).
    fn verdict(&self, dir: &[u8], relative: &[u8], is_dir: bool) -> Option<bool> {
        use std::os::unix::ffi::OsStrExt;
        let set = self.sets.get(&*String::from_utf8_lossy(dir))?;
        match set.matched(std::ffi::OsStr::from_bytes(relative), is_dir) {
            Match::Ignore(_) => Some(true),
            Match::Whitelist(_) => Some(false),
            Match::None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(sets: &[(&str, &[&str])]) -> Filter {
        let mut filter = Filter::default();
        for (dir, lines) in sets {
            let lines: Vec<String> = lines.iter().map(|line| line.to_string()).collect();
            filter.add(dir, &lines).unwrap();
        }
        filter
    }

    #[test]
    fn command_line_rules_follow_gitignore_semantics() {
        let f = filter(&[(
            "",
            &[
                "*.tmp",
                "!keep.tmp",
                "target/",
                "/top.txt",
                "**/cache/**",
                "docs/*.pdf",
            ],
        )]);
        let cases = [
            ("p/a.tmp", false, true),
            ("p/deep/er/a.tmp", false, true),
            ("p/keep.tmp", false, false),
            ("p/sub/keep.tmp", false, false),
            ("p/target", true, true),
            ("p/target", false, false), // a file named target: `target/` is for directories
            ("p/sub/target", true, true),
            ("p/top.txt", false, true),
            ("p/sub/top.txt", false, false), // anchored to the operand
            ("p/x/cache/y", false, true),
            ("p/docs/a.pdf", false, true),
            ("p/docs/sub/a.pdf", false, false),
            ("p/a.txt", false, false),
            ("a.tmp", false, false), // an operand itself is never left out
        ];
        for (path, is_dir, expected) in cases {
            assert_eq!(
                f.excluded(path.as_bytes(), is_dir),
                expected,
                "{path} dir={is_dir}"
            );
        }
    }

    #[test]
    fn the_nearest_ignore_file_decides_and_the_command_line_first() {
        let f = filter(&[
            ("", &["!important.log"]),
            ("p", &["*.log", "build/"]),
            ("p/sub", &["!*.log"]),
        ]);
        assert!(f.excluded(b"p/a.log", false));
        assert!(f.excluded(b"p/x/a.log", false));
        assert!(
            !f.excluded(b"p/sub/a.log", false),
            "the deeper file re-includes"
        );
        assert!(
            !f.excluded(b"p/important.log", false),
            "the command line first"
        );
        assert!(f.excluded(b"p/build", true));
        assert!(!f.excluded(b"q/a.log", false), "another operand's rules");
    }

    #[test]
    fn rules_round_trip_through_the_wire_form_and_bad_ones_are_named() {
        let f = filter(&[("", &["*.o"]), ("p/s", &["x"]), ("p/s", &["!x"])]);
        let again = Filter::from_wire(f.wire()).unwrap();
        assert!(again.excluded(b"p/a.o", false));
        assert!(!again.excluded(b"p/s/x", false), "the later set wins");
        let bad = Filter::from_wire(&[RuleSet {
            dir: "".into(),
            lines: vec!["[z-a]".into()],
        }]);
        assert!(bad.unwrap_err().contains("[z-a]"));
        let (lines, bad) = Filter::valid_lines("# comment\n*.o\r\n[z-a]\n");
        assert_eq!(lines, ["# comment", "*.o"]);
        assert_eq!(
            bad,
            [(
                3,
                "[z-a]".to_string(),
                "invalid range; 'z' > 'a'".to_string()
            )]
        );
    }

    #[test]
    fn a_command_line_pattern_that_cannot_compile_or_match_is_named_with_why() {
        let rules = |exclude: &[&str], include: &[&str]| {
            let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            command_line_rules(&owned(exclude), &[], &owned(include))
        };
        let cases = [
            (
                "[abc",
                "--exclude \"[abc\": unclosed character class; missing ']'",
            ),
            ("[z-a]", "--exclude \"[z-a]\": invalid range; 'z' > 'a'"),
            ("a\\", "--exclude \"a\\\": dangling '\\'"),
            ("a\u{1b}[", "--exclude \"a\\u{1b}[\": unclosed"),
            ("{a,b", "--exclude \"{a,b\": unclosed alternate group"),
            ("", "--exclude \"\": an empty pattern matches nothing"),
            ("  ", "--exclude \"  \": an empty pattern matches nothing"),
            (
                "#x",
                "--exclude \"#x\": a pattern beginning with # is a comment",
            ),
            ("/", "--exclude \"/\": it names nothing"),
            ("!/", "--exclude \"!/\": it names nothing"),
        ];
        for (pattern, said) in cases {
            let err = rules(&[pattern], &[]).unwrap_err();
            assert!(err.starts_with(said), "{pattern:?}: {err}");
        }
        let err = rules(&[], &[""]).unwrap_err();
        assert!(err.starts_with("--include \"\": an empty"), "{err}");
        // Valid ones pass, unchanged, includes after a `!`.
        let fine = rules(&["*.o", "\\#lit", "a/"], &["keep.o"]).unwrap();
        assert_eq!(fine, ["*.o", "\\#lit", "a/", "!keep.o"]);
    }

    #[test]
    fn a_rule_that_names_the_directory_sent_is_said_to_match_below_it() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("cache")).unwrap();
        let dirs = [("src".to_string(), Some(src.clone()))];
        let rules: Vec<String> = [
            "/src/cache/",
            "src/cache",
            "!/src/keep",
            "/cache/",
            "src",
            "*.o",
        ]
        .map(String::from)
        .to_vec();
        let said = rules_naming_a_directory_sent(&rules, &dirs);
        assert_eq!(said.len(), 3, "{said:#?}");
        assert!(said[0].contains("names src/src/cache/") && said[0].contains("write \"/cache/\""));
        assert!(said[1].contains("\"src/cache\"") && said[1].contains("write \"/cache\""));
        assert!(said[2].contains("\"!/src/keep\"") && said[2].contains("write \"/keep\""));
        // A server's path is not looked in: said, without "not there".
        let fetched = [("src".to_string(), None)];
        let said = rules_naming_a_directory_sent(&rules[..1], &fetched);
        assert_eq!(said.len(), 1, "{said:#?}");
        assert!(said[0].contains("below each directory fetched, so it names src/src/cache/;"));
        // Where src/src is there, the rule may mean it: nothing said.
        std::fs::create_dir_all(src.join("src")).unwrap();
        assert!(rules_naming_a_directory_sent(&rules, &dirs).is_empty());
    }

    #[test]
    fn an_include_beneath_an_excluded_directory_is_said_to_never_apply() {
        let rules = |exclude: &[&str], include: &[&str]| {
            let mut all: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
            all.extend(include.iter().map(|s| format!("!{s}")));
            let include: Vec<String> = include.iter().map(|s| s.to_string()).collect();
            shadowed_includes(&all, &include)
        };
        let said = rules(&["logs/"], &["logs/keep.log"]);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].contains("the directory logs/ is excluded"),
            "{said:?}"
        );
        assert!(said[0].contains("--exclude 'logs/*'"), "{said:?}");
        assert_eq!(rules(&["a/b/"], &["a/b/c/d"]).len(), 1);
        // Applies: the directory's content is excluded, not the directory; or the
        // include takes the directory back; or nothing literal to look at.
        assert!(rules(&["logs/*"], &["logs/keep.log"]).is_empty());
        assert!(rules(&["logs/"], &["logs/", "logs/keep.log"]).is_empty());
        assert!(rules(&["*.log"], &["keep.log"]).is_empty());
        assert!(rules(&["logs/"], &["*/keep.log"]).is_empty());
    }

    #[test]
    fn an_exclude_from_file_allows_blanks_and_comments_and_names_a_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules");
        std::fs::write(&file, "# comment\n\n   \n*.o\r\n[abc\n").unwrap();
        let err = command_line_rules(&[], std::slice::from_ref(&file), &[]).unwrap_err();
        assert!(
            err.ends_with("rules: line 5 \"[abc\": unclosed character class; missing ']'"),
            "{err}"
        );
        std::fs::write(&file, "# comment\n\n*.o\r\n").unwrap();
        let fine = command_line_rules(&[], &[file], &[]).unwrap();
        assert_eq!(fine, ["# comment", "", "*.o"]);
    }
}
