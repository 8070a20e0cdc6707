//! `pgleap __manual DIR` (hidden): man pages and shell completions generated from the clap
//! definitions the binary parses with, so they say what `--help` says. `scripts/package`
//! runs it and puts DIR's files where Debian looks for them.
//!
//! DIR receives `man/pgleap.1` and one `man/pgleap-<command>.1` per command, and
//! `completions/bash/pgleap`, `completions/zsh/_pgleap`, `completions/fish/pgleap.fish`.

use std::path::Path;

use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::{Cli, EXIT_CODES};
use crate::error::{Error, Result};

pub(crate) fn execute(dir: &Path) -> Result<()> {
    let man = dir.join("man");
    create_dir(&man)?;
    man_pages(Cli::command(), &man)
        .map_err(|e| Error::io("cannot write the man pages in", &man, e))?;
    for (shell, name) in [
        (Shell::Bash, "bash/pgleap"),
        (Shell::Zsh, "zsh/_pgleap"),
        (Shell::Fish, "fish/pgleap.fish"),
    ] {
        let path = dir.join("completions").join(name);
        create_dir(path.parent().unwrap_or(dir))?;
        let mut file = std::fs::File::create(&path)
            .map_err(|e| Error::io("cannot create the completion script", &path, e))?;
        clap_complete::generate(shell, &mut visible(&Cli::command()), "pgleap", &mut file);
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))
}

/// pgleap(1) and one pgleap-<command>(1) per visible command.
fn man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    // Names the subcommands pgleap-<command> for their pages and cross-references.
    cmd.build();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_page(sub.clone(), dir)?;
    }
    man_page(cmd, dir)
}

/// clap_mangen's sections, with the exit codes (the help's closing text) as an EXIT STATUS
/// list instead of a paragraph roff would refill.
fn man_page(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    let top = cmd.has_subcommands();
    let man = clap_mangen::Man::new(cmd.after_help(None::<&str>))
        .source(format!("pgleap {}", env!("CARGO_PKG_VERSION")))
        .manual("pgleap manual");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    if top {
        man.render_subcommands_section(&mut out)?;
    }
    exit_status(&mut out)?;
    if top {
        man.render_version_section(&mut out)?;
    }
    std::fs::write(dir.join(man.get_filename()), out)
}

fn exit_status(out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut roff = roff::Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    // EXIT_CODES is a heading, then one "  <code>  <meaning>" line per code.
    for line in EXIT_CODES.lines().skip(1) {
        let (code, meaning) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        roff.control("TP", []);
        roff.text([roff::bold(code)]);
        roff.text([roff::roman(meaning.trim())]);
    }
    roff.to_writer(out)
}

/// `cmd` without its hidden subcommands (`__db`, `__manual`): clap_complete would offer them
/// at `pgleap <TAB>`, unlike clap_mangen and `--help`.
fn visible(cmd: &clap::Command) -> clap::Command {
    let subcommands: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    // clap adds --help and --version again when the copy is built.
    let args: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .cloned()
        .collect();
    let mut copy = clap::Command::new("pgleap").version(env!("CARGO_PKG_VERSION"));
    if let Some(about) = cmd.get_about() {
        copy = copy.about(about.clone());
    }
    copy.args(args).subcommands(subcommands)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_page_per_command_and_completions_without_internal_commands() {
        let dir = tempfile::tempdir().unwrap();
        execute(dir.path()).unwrap();
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        let mut pages: Vec<String> = std::fs::read_dir(dir.path().join("man"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        pages.sort();
        assert_eq!(
            pages,
            [
                "pgleap-check.1",
                "pgleap-finalize.1",
                "pgleap-rehearse.1",
                "pgleap-rollback.1",
                "pgleap-status.1",
                "pgleap-upgrade.1",
                "pgleap.1"
            ]
        );
        let upgrade = read("man/pgleap-upgrade.1");
        assert!(upgrade.contains("PGLEAP_LEAVE_STOPPED"), "{upgrade}");
        assert!(upgrade.contains(".SH \"EXIT STATUS\""), "{upgrade}");
        assert!(read("man/pgleap.1").contains("pgleap\\-upgrade(1)"));
        for script in [
            "completions/bash/pgleap",
            "completions/zsh/_pgleap",
            "completions/fish/pgleap.fish",
        ] {
            let text = read(script);
            assert!(text.contains("leave-stopped"), "{script}");
            assert!(
                !text.contains("__db") && !text.contains("__manual"),
                "{script}"
            );
        }
    }
}
