//! `xfer man`: man pages rendered from the clap definition in `args.rs`, so the
//! pages and `--help` cannot drift apart (ripgrep keeps its docs beside its flags
//! the same way). Owns only the rendering; it must not reach for anything that runs
//! a transfer.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::CommandFactory;

use super::args::Cli;

/// `xfer man [COMMAND]`, or every page into a directory.
pub(crate) fn run(command: Option<&str>, dir: Option<PathBuf>) -> Result<()> {
    let root = Cli::command();
    let pages = |name: Option<&str>| -> Result<(String, clap::Command)> {
        match name {
            None => Ok(("xfer".into(), root.clone())),
            Some(name) => {
                let sub = root
                    .find_subcommand(name)
                    .ok_or_else(|| anyhow::anyhow!("no subcommand {name:?}; see `xfer --help`"))?;
                let title = format!("xfer-{name}");
                Ok((title.clone(), sub.clone().name(title)))
            }
        }
    };
    match dir {
        None => {
            let (_, page) = pages(command)?;
            let mut stdout = std::io::stdout().lock();
            match render_page(page, &mut stdout).and_then(|()| stdout.flush()) {
                // `xfer man | head`: the reader had enough.
                Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => Ok(other?),
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            let names = std::iter::once(None).chain(
                root.get_subcommands()
                    .map(|sub| Some(sub.get_name().to_string()))
                    .collect::<Vec<_>>(),
            );
            for name in names {
                let (title, page) = pages(name.as_deref())?;
                let mut file = std::fs::File::create(dir.join(format!("{title}.1")))?;
                render_page(page, &mut file)?;
            }
            Ok(())
        }
    }
}

/// One man page from the clap definition. The text after the options (examples,
/// exit codes) becomes sections of its own, its lines kept as written: clap_mangen
/// would reflow them into one paragraph.
fn render_page(page: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let after = page
        .get_after_help()
        .map(|text| text.to_string())
        .unwrap_or_default();
    let page = page
        .version(env!("CARGO_PKG_VERSION"))
        .after_help(None::<&'static str>);
    let has_subcommands = page.has_subcommands();
    let man = clap_mangen::Man::new(page);
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    if has_subcommands {
        man.render_subcommands_section(out)?;
    }
    for block in after.split("\n\n") {
        let (heading, body) = block.split_once('\n').unwrap_or((block, ""));
        let heading = match heading.trim_end_matches(':') {
            "Exit codes" => "EXIT STATUS".to_string(),
            other => other.to_uppercase(),
        };
        writeln!(out, ".SH \"{heading}\"\n.nf")?;
        for line in body.lines() {
            // Roff: a backslash is written \e; a line may not start with . or '.
            writeln!(out, "\\&{}", line.replace('\\', "\\e"))?;
        }
        writeln!(out, ".fi")?;
    }
    man.render_version_section(out)
}
