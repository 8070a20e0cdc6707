//! What users read about their physical standbys: each one's rebuild as commands runnable
//! verbatim (real hosts and paths, no variable to set), each group under a `#` comment
//! naming the host it runs on, as the cluster owner.
//!
//! Two procedures, from PostgreSQL's pg_upgrade documentation: in link mode, while the new
//! primary has never started, the rsync of the old and new directories together
//! (`--hard-links --size-only`), which reuses the standby's own files; otherwise a fresh base
//! backup of the new primary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::inspect::replication::Sender;
use crate::plan::Plan;
use crate::preflight::replication::{Fate, Section, describe_standby, standbys};
use crate::preflight::standby::{Place, common_root, pauses, standby_root};

fn q(p: &Path) -> String {
    shell_words::quote(&p.display().to_string()).into_owned()
}

/// The standby's place, with what the procedures need to say about it.
struct Standby<'a> {
    sender: &'a Sender,
    place: &'a Place,
    /// How the comments name its host.
    host: String,
    /// Its host, short.
    at: String,
    /// The file its own settings are saved to, beside its old data directory.
    saved: PathBuf,
}

fn each<'a>(r: &'a Section, owner: &str) -> Vec<Standby<'a>> {
    standbys(&r.facts)
        .filter_map(|s| {
            let place = r
                .standby_places
                .iter()
                .find(|p| p.name == s.application_name)?;
            let host = place.host.as_ref().map_or_else(
                || format!("the standby's host (this host), as {owner}"),
                |h| format!("the standby's host {h}, as {owner}"),
            );
            let at = place.host.clone().unwrap_or_else(|| "this host".into());
            let mut saved = place.old_dir.clone().into_os_string();
            saved.push(".standby.auto.conf");
            Some(Standby {
                sender: s,
                place,
                host,
                at,
                saved: saved.into(),
            })
        })
        .collect()
}

fn primary_host(r: &Section, owner: &str) -> String {
    format!("the primary's host ({}), as {owner}", r.hostname)
}

/// `-h` for a standby reaching the new primary: its socket directory from this host, else
/// this host's name.
fn primary_address(r: &Section, s: &Standby<'_>) -> String {
    match (&s.place.host, &r.socket_dir) {
        (None, Some(dir)) => dir.display().to_string(),
        _ => r.hostname.clone(),
    }
}

fn stop_old(out: &mut String, plan: &Plan, s: &Standby<'_>) {
    let ctl = q(&plan.old.bindir.join("pg_ctl"));
    let dir = q(&s.place.old_dir);
    let _ = writeln!(
        out,
        "    # {}: stop the old standby if it still runs\n    ! {ctl} -D {dir} status >/dev/null || {ctl} -D {dir} stop -m fast",
        s.host
    );
}

fn save_settings(out: &mut String, plan: &Plan, s: &Standby<'_>) {
    let _ = writeln!(
        out,
        "    # {}: save its own settings (primary_conninfo, primary_slot_name, ...), which the new directory would not have\n    cp {} {}",
        s.host,
        q(&s.place.old_dir.join("postgresql.auto.conf")),
        q(&s.saved)
    );
    let own = own_config(plan, s);
    if !own.is_empty() {
        let _ = writeln!(
            out,
            "    # {}: and its own configuration files ({}): the primary's are apart, in {}",
            s.host,
            own.join(", "),
            plan.old.conf_dir().display()
        );
    }
    for f in own {
        let _ = writeln!(
            out,
            "    cp -p {} {}",
            q(&s.place.old_dir.join(f)),
            q(&saved_config(s, f))
        );
    }
}

/// The configuration files a standby on this host keeps in its data directory while the
/// primary keeps its own apart (Debian): saved and put back around the rebuild.
fn own_config<'a>(plan: &Plan, s: &Standby<'a>) -> &'a [String] {
    match (&plan.new.confdir, &s.place.own) {
        (Some(_), Some(own)) if s.place.host.is_none() => &own.config,
        _ => &[],
    }
}

/// Where a standby's configuration file is saved: beside its old data directory.
fn saved_config(s: &Standby<'_>, file: &str) -> PathBuf {
    let mut saved = s.place.old_dir.clone().into_os_string();
    saved.push(format!(".standby.{file}"));
    saved.into()
}

/// `sed` commenting out the settings the new major does not have, or `cat`.
fn without_gone(plan: &Plan, r: &Section, file: &str) -> String {
    if r.settings_gone.is_empty() {
        return format!("cat {file}");
    }
    // GNU sed: `I` matches the name in any case, as PostgreSQL does.
    format!(
        "sed -E 's/^[[:space:]]*({})[[:space:]]*(=|[[:space:]]).*/# pgleap: PostgreSQL {} does not have this setting: &/I' {file}",
        r.settings_gone.join("|"),
        plan.new.major
    )
}

fn restore_settings(out: &mut String, plan: &Plan, r: &Section, s: &Standby<'_>) {
    let append = without_gone(plan, r, &q(&s.saved));
    let note = if r.settings_gone.is_empty() {
        String::new()
    } else {
        format!(
            "    # {}: its saved settings go back without those PostgreSQL {} does not have ({}), commented out: the new standby would not start with them\n",
            s.host,
            plan.new.major,
            r.settings_gone.join(", ")
        )
    };
    let _ = writeln!(
        out,
        "{note}    {{ echo '# pgleap: the settings of this standby, from its old postgresql.auto.conf'; {append}; }} >> {}",
        q(&s.place.new_dir.join("postgresql.auto.conf"))
    );
}

fn start_new(out: &mut String, plan: &Plan, s: &Standby<'_>) {
    let dir = q(&ctl_dir(plan, s));
    let _ = writeln!(
        out,
        "    {} -D {dir} -l {} start",
        q(&plan.new.bindir.join("pg_ctl")),
        q(&s.place.new_dir.join("startup.log"))
    );
}

/// The base backup procedure, for any mode once the new primary has started.
fn basebackup(out: &mut String, plan: &Plan, r: &Section, s: &Standby<'_>) {
    stop_old(out, plan, s);
    save_settings(out, plan, s);
    let slot = s.sender.slot.as_ref().map(|n| match r.fate_of_slot(n) {
        Some(Fate::Recreated | Fate::Kept) => format!(" -S {}", shell_words::quote(n)),
        _ => format!(" -C -S {}", shell_words::quote(n)),
    });
    let _ = writeln!(
        out,
        "    # {}, with PostgreSQL {} at {}: copy the running new primary into {} (which must not exist yet), make it a standby of it with its own settings, and start it\n    {} -h {} -p {} -U {} -D {} -X stream -R --checkpoint=fast{}{}",
        s.host,
        plan.new.major,
        plan.new.bindir.display(),
        s.place.new_dir.display(),
        q(&plan.new.bindir.join("pg_basebackup")),
        shell_words::quote(&primary_address(r, s)),
        plan.new.port,
        shell_words::quote(&s.sender.user),
        q(&s.place.new_dir),
        slot.unwrap_or_default(),
        own_places(plan, s)
    );
    restore_settings(out, plan, r, s);
    config_dir(out, plan, r, s);
    start_new(out, plan, s);
}

/// For a standby on this host with its own WAL directory and tablespace locations: the
/// base backup's new ones beside them (`…/16` → `…/17`, else `-17` appended), since
/// pg_basebackup writes only into empty directories and the primary's are taken.
fn own_places(plan: &Plan, s: &Standby<'_>) -> String {
    let Some(own) = s.place.own.as_ref().filter(|_| s.place.host.is_none()) else {
        return String::new();
    };
    let beside =
        |p: &Path| crate::preflight::placement::new_waldir(p, plan.old.major, plan.new.major);
    let mut args = String::new();
    for t in &own.tablespaces {
        let arg = format!(
            "--tablespace-mapping={}={}",
            t.primary.display(),
            beside(&t.standby).display()
        );
        args.push(' ');
        args.push_str(&shell_words::quote(&arg));
    }
    if let Some(wal) = &own.wal {
        let arg = format!("--waldir={}", beside(wal).display());
        args.push(' ');
        args.push_str(&shell_words::quote(&arg));
    }
    args
}

/// `HOST:PATH` for rsync over ssh; an IPv6 address in brackets.
fn remote(host: &str, path: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{path}")
    } else {
        format!("{host}:{path}")
    }
}

const RSYNC: &str =
    "rsync --archive --delete --hard-links --size-only --no-inc-recursive --relative";

/// A location outside the data directory (tablespace, WAL) of a standby on this host whose
/// own copy pgleap could not learn: what to copy, as a comment.
fn elsewhere(out: &mut String, primary: &str, what: &str, line: &str) {
    let _ = writeln!(
        out,
        "    # {primary}: {what}, the primary's: pgleap could not read where this standby keeps its own copy; rsync like this into it, then point the new directory's link there: {line}"
    );
}

/// rsync of the old and new directories of one location (data directory, tablespace, WAL)
/// from the primary into the same place on the standby.
fn rsync(old: &Path, new: &Path, dest_root: &Path, host: Option<&str>) -> String {
    let (root, rel_old, rel_new) = common_root(old, new);
    let src = |rel: &Path| q(&root.join(".").join(rel));
    let mut dest = dest_root.display().to_string();
    if !dest.ends_with('/') {
        dest.push('/');
    }
    let dest = host.map_or(dest.clone(), |h| remote(h, &dest));
    format!(
        "{RSYNC} {} {} {}",
        src(&rel_old),
        src(&rel_new),
        shell_words::quote(&dest)
    )
}

/// rsync of a tablespace's old and new subdirectories (`PG_16_*`, `PG_17_*`: the shell
/// expands them) into `dest` (the standby's copy of the tablespace) on `host`.
fn tablespace_rsync(
    location: &Path,
    (old, new): (u32, u32),
    dest: &Path,
    host: Option<&str>,
) -> String {
    let dest = format!("{}/", dest.display());
    format!(
        "{RSYNC} {t}/./PG_{old}_* {t}/./PG_{new}_* {}",
        shell_words::quote(&host.map_or(dest.clone(), |h| remote(h, &dest))),
        t = q(location)
    )
}

/// The WAL directory and tablespaces of a standby on this host: its own copies (learned
/// from its links), which the new directory's links then point to (the rsync of the data
/// directory brought the primary's links).
fn own_outside(out: &mut String, plan: &Plan, primary: &str, s: &Standby<'_>) {
    let own = s.place.own.clone().unwrap_or_default();
    let new_dir = &s.place.new_dir;
    if let (Some(old_wal), Some(wal)) = (&plan.old.waldir, &plan.new.waldir) {
        let _ = match &own.wal {
            Some(standby_wal) => {
                let new_wal = crate::preflight::placement::new_waldir(
                    standby_wal,
                    plan.old.major,
                    plan.new.major,
                );
                writeln!(
                    out,
                    "    # {primary}: the new primary's WAL directory {} into the standby's own, {} (beside its {}), and its pg_wal pointed there\n    rsync --archive --delete {}/ {}/\n    ln -sfn {} {}",
                    wal.display(),
                    new_wal.display(),
                    standby_wal.display(),
                    q(wal),
                    q(&new_wal),
                    q(&new_wal),
                    q(&new_dir.join("pg_wal"))
                )
            }
            None if s.place.own.is_some() => writeln!(
                out,
                "    # {primary}: the new primary's WAL directory {} into the standby's new data directory (the standby keeps its WAL there, not apart)\n    rm {}\n    rsync --archive {}/ {}/",
                wal.display(),
                q(&new_dir.join("pg_wal")),
                q(wal),
                q(&new_dir.join("pg_wal"))
            ),
            None => {
                let what = format!(
                    "the WAL directories {} and {}",
                    old_wal.display(),
                    wal.display()
                );
                let line = rsync(old_wal, wal, &common_root(old_wal, wal).0, None);
                elsewhere(out, primary, &what, &line);
                Ok(())
            }
        };
    }
    let majors = (plan.old.major, plan.new.major);
    for t in &plan.tablespaces {
        if let Some(o) = own.tablespaces.iter().find(|o| &o.primary == t) {
            let _ = writeln!(
                out,
                "    # {primary}: the tablespace {}: its subdirectories of both majors onto the standby's copy, {} (files it already has are hard-linked), and the new directory's link pointed there\n    {}\n    ln -sfn {} {}",
                t.display(),
                o.standby.display(),
                tablespace_rsync(t, majors, &o.standby, None),
                q(&o.standby),
                q(&new_dir.join("pg_tblspc").join(&o.oid))
            );
        } else {
            let line = tablespace_rsync(t, majors, t, None);
            let what = format!("the tablespace {}", t.display());
            elsewhere(out, primary, &what, &line);
        }
    }
}

/// The documented rsync procedure, while the new primary has never started.
fn rsync_procedure(
    out: &mut String,
    plan: &Plan,
    r: &Section,
    s: &Standby<'_>,
    checkpoint: Option<&str>,
) {
    stop_old(out, plan, s);
    let control = q(&plan.old.bindir.join("pg_controldata"));
    match checkpoint {
        Some(cp) => {
            let _ = writeln!(
                out,
                "    # {}: check it replayed everything the old primary wrote: its latest checkpoint must be the primary's shutdown checkpoint, {cp}\n    LC_ALL=C {control} -D {} | grep -qx 'Latest checkpoint location: *{cp}' || {{ echo 'standby {} is not caught up with the old primary (its latest checkpoint location is not {cp}): do not rsync it; rebuild it from a base backup once the upgrade is done' >&2; false; }}",
                s.host,
                q(&s.place.old_dir),
                s.place.name.replace('\'', "")
            );
        }
        None => {
            let _ = writeln!(
                out,
                "    # {}: pgleap could not read the old primary's latest checkpoint when it stopped: do not rsync a standby you cannot show is caught up; rebuild it from a base backup once the upgrade is done",
                s.host
            );
        }
    }
    save_settings(out, plan, s);
    let to = s.place.host.as_deref();
    let (_, rel_old, _) = common_root(&plan.old.datadir, &plan.new.datadir);
    let dest = standby_root(&s.place.old_dir, &rel_old).unwrap_or_else(|| {
        s.place
            .old_dir
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf()
    });
    let primary = primary_host(r, &plan.owner.name);
    let _ = writeln!(
        out,
        "    # {}{}: copy the upgraded primary's directories onto the standby's: files the standby already has are hard-linked, not copied\n    {}",
        primary_host(r, &plan.owner.name),
        to.map(|h| format!(", over ssh to {h}")).unwrap_or_default(),
        rsync(&plan.old.datadir, &plan.new.datadir, &dest, to)
    );
    if to.is_none() {
        own_outside(out, plan, &primary, s);
    } else {
        if let (Some(o), Some(n)) = (&plan.old.waldir, &plan.new.waldir) {
            let _ = writeln!(out, "    {}", rsync(o, n, &common_root(o, n).0, to));
        }
        for t in &plan.tablespaces {
            let majors = (plan.old.major, plan.new.major);
            let _ = writeln!(out, "    {}", tablespace_rsync(t, majors, t, to));
        }
    }
    let _ = writeln!(
        out,
        "    # {}: make the new directory a standby, with its own settings back",
        s.host
    );
    let _ = writeln!(
        out,
        "    touch {}",
        q(&s.place.new_dir.join("standby.signal"))
    );
    restore_settings(out, plan, r, s);
    config_dir(out, plan, r, s);
}

/// A configuration directory outside the data directory (Debian's
/// `/etc/postgresql/N/NAME`): the standby needs the new one too.
fn config_dir(out: &mut String, plan: &Plan, r: &Section, s: &Standby<'_>) {
    let Some(conf) = &plan.new.confdir else {
        return;
    };
    match &s.place.host {
        Some(h) => {
            let (root, _, rel_new) = common_root(&plan.old.conf_dir(), conf);
            let dest = remote(h, &format!("{}/", root.display()));
            let _ = writeln!(
                out,
                "    # {}, over ssh to {h}: the new configuration directory {} too (then make the standby's own changes to its postgresql.conf there again)\n    rsync --archive --relative {} {}",
                primary_host(r, &plan.owner.name),
                conf.display(),
                q(&root.join(".").join(rel_new)),
                shell_words::quote(&dest)
            );
        }
        None if !own_config(plan, s).is_empty() => {
            let _ = writeln!(
                out,
                "    # {}: its own configuration files back into the new directory (settings PostgreSQL {} does not have commented out)",
                s.host, plan.new.major
            );
            for f in own_config(plan, s) {
                let saved = q(&saved_config(s, f));
                let to = q(&s.place.new_dir.join(f));
                let line = if f == "postgresql.conf" {
                    format!("{} > {to}", without_gone(plan, r, &saved))
                } else {
                    format!("cp -p {saved} {to}")
                };
                let _ = writeln!(out, "    {line}");
            }
        }
        None => {
            let _ = writeln!(
                out,
                "    # {}: the standby's configuration directory for {} is not the primary's {}: create it like its old one, from the primary's new one",
                s.host,
                plan.new.major,
                conf.display()
            );
        }
    }
}

/// Where `pg_ctl -D` points for the standby: its configuration directory when it is apart
/// (at the primary's path on another host), else its data directory.
fn ctl_dir(plan: &Plan, s: &Standby<'_>) -> PathBuf {
    match (&plan.new.confdir, &s.place.host) {
        (Some(conf), Some(_)) => conf.clone(),
        _ => s.place.new_dir.clone(),
    }
}

/// The slot of a standby whose rebuild pgleap prints, when the new primary will not have
/// it: the rebuild creates it (`pg_basebackup -C`, or a command before the start after an
/// rsync), the one way the report gives.
fn slot_to_create<'a>(r: &Section, s: &Standby<'a>) -> Option<&'a str> {
    s.sender
        .slot
        .as_deref()
        .filter(|n| !matches!(r.fate_of_slot(n), Some(Fate::Recreated | Fate::Kept)))
}

/// How the report names the standby whose rebuild creates the slot `slot` again.
pub(crate) fn rebuilt_with_slot(r: &Section, slot: &str) -> Option<String> {
    standbys(&r.facts)
        .filter(|s| s.slot.as_deref() == Some(slot))
        .find(|s| {
            r.standby_places
                .iter()
                .any(|p| p.name == s.application_name)
        })
        .map(|s| format!("standby {}", describe_standby(s)))
}

/// After an rsync: the slot created on the new primary, then the standby started.
fn start_after_rsync(out: &mut String, plan: &Plan, r: &Section, s: &Standby<'_>) {
    if let Some(slot) = slot_to_create(r, s) {
        let _ = writeln!(
            out,
            "    # {}: its slot '{slot}' first\n    {}",
            primary_host(r, &plan.owner.name),
            super::replication::create_physical_slot(plan, r, slot)
        );
    }
    let _ = writeln!(out, "    # {}", s.host);
    start_new(out, plan, s);
}

/// The standbys' part of the output printed when the upgrade pauses before the new
/// primary's first start: each one's rsync, then what comes next. `resume` is the command
/// that starts the new primary.
pub(crate) fn paused(plan: &Plan, checkpoint: Option<&str>, resume: &str) -> String {
    let Some(r) = &plan.replication else {
        return String::new();
    };
    let mut out = String::from("Standbys:\n");
    for s in each(r, &plan.owner.name) {
        let _ = writeln!(
            out,
            "  standby {}, data directory {} on {}: rebuild it now, while the new primary has never started (pg_upgrade's documented rsync for --link mode); run these in order, each on the host its comment names:",
            describe_standby(s.sender),
            s.place.old_dir.display(),
            s.at
        );
        rsync_procedure(&mut out, plan, r, &s, checkpoint);
        let slot = slot_to_create(r, &s).map_or_else(String::new, |n| {
            format!(
                ", create its slot on {}: {}; then",
                primary_host(r, &plan.owner.name),
                super::replication::create_physical_slot(plan, r, n)
            )
        });
        let _ = writeln!(
            out,
            "  Then, once {resume} has started the new primary{slot}, start it on {}: {} -D {} -l {} start",
            s.host,
            q(&plan.new.bindir.join("pg_ctl")),
            q(&ctl_dir(plan, &s)),
            q(&s.place.new_dir.join("startup.log"))
        );
    }
    out.push_str(
        "  A standby not rebuilt before the new primary starts cannot use rsync any more: rebuild it from a base backup afterwards, as the report will say. If you roll back instead (pgleap rollback), a standby already rsynced no longer matches the old primary: rebuild it from a base backup of the old primary.\n",
    );
    out
}

/// The standbys' lines of the report, once the new primary runs.
pub(crate) fn report_lines(out: &mut String, plan: &Plan, r: &Section) {
    let rsynced = pauses(Some(r), plan.mode == crate::plan::Mode::Link);
    for s in each(r, &plan.owner.name) {
        if rsynced {
            let _ = writeln!(
                out,
                "  standby {}: if you rebuilt it with rsync while the upgrade paused, start it now:",
                describe_standby(s.sender),
            );
            start_after_rsync(out, plan, r, &s);
            let _ = writeln!(
                out,
                "  If you did not, rsync is no longer correct (the new primary has started): rebuild {} from a fresh base backup of the new primary, each command on the host its comment names:",
                describe_standby(s.sender)
            );
        } else {
            let _ = writeln!(
                out,
                "  standby {}: cannot follow the new major; rebuild it from a fresh base backup of the new primary, each command on the host its comment names:",
                describe_standby(s.sender)
            );
        }
        basebackup(out, plan, r, &s);
        let _ = writeln!(
            out,
            "  Once it streams from the new primary, its old data directory {} and {} can be removed.",
            s.place.old_dir.display(),
            s.saved.display()
        );
    }
    let unplaced = standbys(&r.facts).filter(|s| {
        !r.standby_places
            .iter()
            .any(|p| p.name == s.application_name)
    });
    for s in unplaced {
        let _ = writeln!(
            out,
            "  standby {}: cannot follow the new major; rebuild it from a fresh base backup of the new primary",
            describe_standby(s)
        );
    }
}

/// How the plan says a standby is rebuilt.
pub(crate) fn plan_fate(plan: &Plan, r: &Section, s: &Sender) -> String {
    let at = r
        .standby_places
        .iter()
        .find(|p| p.name == s.application_name)
        .map(|p| {
            format!(
                " (data directory {} on {})",
                p.old_dir.display(),
                p.host.as_deref().unwrap_or("this host")
            )
        })
        .unwrap_or_default();
    if pauses(Some(r), plan.mode == crate::plan::Mode::Link) {
        format!(
            "rebuild it{at} with rsync while the upgrade pauses before the new primary's first start"
        )
    } else {
        format!("rebuild it{at} from a fresh base backup of the new primary")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsync_lines_keep_the_primarys_layout_on_the_standby() {
        assert_eq!(
            rsync(
                Path::new("/var/lib/postgresql/16/main"),
                Path::new("/var/lib/postgresql/17/main"),
                Path::new("/var/lib/postgresql"),
                Some("db2.example.com")
            ),
            "rsync --archive --delete --hard-links --size-only --no-inc-recursive --relative /var/lib/postgresql/./16/main /var/lib/postgresql/./17/main db2.example.com:/var/lib/postgresql/"
        );
        assert_eq!(
            rsync(
                Path::new("/srv/pg data/16"),
                Path::new("/srv/pg data/17"),
                Path::new("/standby/pg data"),
                None
            ),
            "rsync --archive --delete --hard-links --size-only --no-inc-recursive --relative '/srv/pg data/./16' '/srv/pg data/./17' '/standby/pg data/'"
        );
        assert_eq!(
            tablespace_rsync(
                Path::new("/vol1/ts"),
                (16, 17),
                Path::new("/vol1/ts"),
                Some("2001:db8::5")
            ),
            "rsync --archive --delete --hard-links --size-only --no-inc-recursive --relative /vol1/ts/./PG_16_* /vol1/ts/./PG_17_* '[2001:db8::5]:/vol1/ts/'"
        );
        assert_eq!(
            tablespace_rsync(
                Path::new("/vol1/ts one"),
                (16, 17),
                Path::new("/vol1/ts one"),
                Some("db2")
            ),
            "rsync --archive --delete --hard-links --size-only --no-inc-recursive --relative '/vol1/ts one'/./PG_16_* '/vol1/ts one'/./PG_17_* 'db2:/vol1/ts one/'"
        );
    }
}

#[cfg(test)]
mod procedure_tests {
    use super::*;

    /// A Debian primary (`/var/lib/postgresql/16/main`, configuration in
    /// `/etc/postgresql/N/main`) with a tablespace and its WAL apart, and a standby on db2.
    fn plan() -> Plan {
        let side = |major: u32| {
            serde_json::json!({
                "datadir": format!("/var/lib/postgresql/{major}/main"),
                "confdir": format!("/etc/postgresql/{major}/main"),
                "waldir": format!("/wal/{major}"),
                "bindir": format!("/usr/lib/postgresql/{major}/bin"),
                "major": major,
                "version": format!("{major}.1"),
                "port": 5432,
            })
        };
        let sender = serde_json::json!({
            "pid": 1, "user": "replicator", "application_name": "db2", "client_addr": "10.0.0.2",
            "state": "streaming", "slot": "db2", "logical": false,
        });
        let replication = serde_json::json!({
            "policies": {"slots": "recreate-physical", "subscriptions": "refuse", "standbys": "rebuild-later"},
            "facts": {
                "in_recovery": false, "wal_level": "replica", "max_replication_slots": 10,
                "current_lsn": "0/3000000", "senders": [sender], "slots": [], "subscriptions": [],
                "publications": [],
            },
            "slots": [["db2", "recreated"]], "subscriptions": [], "standbys": [["db2", "rebuild"]],
            "hostname": "db1",
            "standby_places": [{
                "name": "db2", "host": "10.0.0.2", "given": false,
                "old_dir": "/var/lib/postgresql/16/main", "new_dir": "/var/lib/postgresql/17/main",
            }],
        });
        serde_json::from_value(serde_json::json!({
            "old": side(16), "new": side(17), "mode": "link", "mode_reason": "", "jobs": 1,
            "owner": {"uid": 101, "gid": 101, "name": "postgres", "home": "/var/lib/postgresql"},
            "work_dir": "/var/lib/postgresql/.pgleap", "old_running": true, "old_state": "",
            "tablespaces": ["/srv/ts"], "initdb": null, "space": [], "relation_bytes": 0,
            "estimated_downtime_secs": 1, "analyze": true, "leave_stopped": false, "steps": [],
            "replication": replication,
        }))
        .unwrap()
    }

    #[test]
    fn a_remote_standby_of_a_debian_primary_gets_every_directory() {
        let plan = plan();
        let text = paused(&plan, Some("0/2000028"), "pgleap upgrade --cluster 16/main");
        let commands: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("    ") && !l.trim_start().starts_with('#'))
            .map(str::trim)
            .collect();
        assert_eq!(
            commands,
            [
                "! /usr/lib/postgresql/16/bin/pg_ctl -D /var/lib/postgresql/16/main status >/dev/null || /usr/lib/postgresql/16/bin/pg_ctl -D /var/lib/postgresql/16/main stop -m fast",
                "LC_ALL=C /usr/lib/postgresql/16/bin/pg_controldata -D /var/lib/postgresql/16/main | grep -qx 'Latest checkpoint location: *0/2000028' || { echo 'standby db2 is not caught up with the old primary (its latest checkpoint location is not 0/2000028): do not rsync it; rebuild it from a base backup once the upgrade is done' >&2; false; }",
                "cp /var/lib/postgresql/16/main/postgresql.auto.conf /var/lib/postgresql/16/main.standby.auto.conf",
                "rsync --archive --delete --hard-links --size-only --no-inc-recursive --relative /var/lib/postgresql/./16/main /var/lib/postgresql/./17/main 10.0.0.2:/var/lib/postgresql/",
                "rsync --archive --delete --hard-links --size-only --no-inc-recursive --relative /wal/./16 /wal/./17 10.0.0.2:/wal/",
                "rsync --archive --delete --hard-links --size-only --no-inc-recursive --relative /srv/ts/./PG_16_* /srv/ts/./PG_17_* 10.0.0.2:/srv/ts/",
                "touch /var/lib/postgresql/17/main/standby.signal",
                "{ echo '# pgleap: the settings of this standby, from its old postgresql.auto.conf'; cat /var/lib/postgresql/16/main.standby.auto.conf; } >> /var/lib/postgresql/17/main/postgresql.auto.conf",
                "rsync --archive --relative /etc/postgresql/./17/main 10.0.0.2:/etc/postgresql/",
            ]
        );
        assert!(
            text.contains("    # the primary's host (db1), as postgres, over ssh to 10.0.0.2: copy the upgraded primary's directories"),
            "{text}"
        );
        assert!(
            text.contains("start it on the standby's host 10.0.0.2, as postgres: /usr/lib/postgresql/17/bin/pg_ctl -D /etc/postgresql/17/main -l /var/lib/postgresql/17/main/startup.log start"),
            "{text}"
        );
    }

    #[test]
    fn a_remote_standby_of_a_copy_upgrade_gets_a_base_backup() {
        let mut plan = plan();
        plan.mode = crate::plan::Mode::Copy;
        let r = plan.replication.clone().unwrap();
        let mut text = String::new();
        report_lines(&mut text, &plan, &r);
        let commands: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("    ") && !l.trim_start().starts_with('#'))
            .map(str::trim)
            .collect();
        assert_eq!(
            commands,
            [
                "! /usr/lib/postgresql/16/bin/pg_ctl -D /var/lib/postgresql/16/main status >/dev/null || /usr/lib/postgresql/16/bin/pg_ctl -D /var/lib/postgresql/16/main stop -m fast",
                "cp /var/lib/postgresql/16/main/postgresql.auto.conf /var/lib/postgresql/16/main.standby.auto.conf",
                "/usr/lib/postgresql/17/bin/pg_basebackup -h db1 -p 5432 -U replicator -D /var/lib/postgresql/17/main -X stream -R --checkpoint=fast -S db2",
                "{ echo '# pgleap: the settings of this standby, from its old postgresql.auto.conf'; cat /var/lib/postgresql/16/main.standby.auto.conf; } >> /var/lib/postgresql/17/main/postgresql.auto.conf",
                "rsync --archive --relative /etc/postgresql/./17/main 10.0.0.2:/etc/postgresql/",
                "/usr/lib/postgresql/17/bin/pg_ctl -D /etc/postgresql/17/main -l /var/lib/postgresql/17/main/startup.log start",
            ]
        );
        assert!(!text.contains("rsync --archive --delete"), "{text}");
    }

    /// A standby on this host that keeps its WAL in its data directory while the primary's
    /// is apart, and whose tablespace links pgleap could not match: the WAL link the rsync
    /// brought is replaced by a directory, and the tablespace is left to a comment.
    #[test]
    fn a_standby_on_this_host_keeping_its_wal_inside_gets_a_wal_directory() {
        let mut plan = plan();
        let r = plan.replication.as_mut().unwrap();
        r.standby_places[0].host = None;
        r.standby_places[0].old_dir = "/sb/16/main".into();
        r.standby_places[0].new_dir = "/sb/17/main".into();
        r.standby_places[0].own = Some(crate::preflight::standby::OwnPaths::default());
        r.socket_dir = Some("/run/postgresql".into());
        let text = paused(&plan, Some("0/2000028"), "pgleap upgrade --cluster 16/main");
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let at = lines
            .iter()
            .position(|l| *l == "rm /sb/17/main/pg_wal")
            .unwrap_or_else(|| panic!("{text}"));
        assert_eq!(
            lines[at + 1],
            "rsync --archive /wal/17/ /sb/17/main/pg_wal/"
        );
        assert!(
            text.contains("# the primary's host (db1), as postgres: the tablespace /srv/ts, the primary's: pgleap could not read where this standby keeps its own copy; rsync like this into it, then point the new directory's link there: rsync --archive --delete --hard-links --size-only --no-inc-recursive --relative /srv/ts/./PG_16_* /srv/ts/./PG_17_* /srv/ts/"),
            "{text}"
        );
        assert!(!text.contains("ln -sfn"), "{text}");
    }

    /// With `--slots drop`, the paused output creates the standby's slot right before its
    /// start: the one way the report gives.
    #[test]
    fn a_dropped_slot_is_created_before_the_standbys_start() {
        let mut plan = plan();
        plan.replication.as_mut().unwrap().slots = vec![("db2".into(), Fate::Dropped)];
        let text = paused(&plan, Some("0/2000028"), "pgleap upgrade --cluster 16/main");
        assert!(
            text.contains("  Then, once pgleap upgrade --cluster 16/main has started the new primary, create its slot on the primary's host (db1), as postgres: /usr/lib/postgresql/17/bin/psql -X -v 'ON_ERROR_STOP=1' -h db1 -p 5432 -U postgres -d postgres -c 'SELECT pg_create_physical_replication_slot('\\''db2'\\'', true)'; then, start it on the standby's host 10.0.0.2, as postgres: "),
            "{text}"
        );
    }
}
