//! `<state-dir>/pids`: which processes `mesh up` runs right now, one
//! `<name> <pid>` per line (`up` itself, `consul` if it started one, every
//! instance as `<service>-<n>`). Rewritten atomically on every change and
//! removed on a clean exit, so scripts and tests can check that nothing is
//! left behind. It also keeps two `mesh up` off one state folder.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    sync::Mutex,
};

use anyhow::{bail, Context as _};

use crate::process::{is_alive, runs_with_argument};

/// The pid file of one `mesh up`.
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, u32>>,
}

impl PidFile {
    /// Takes `<state_dir>/pids` for this process. Fails when a `mesh up`
    /// still running uses it; warns about instances a killed `mesh up` left.
    pub(crate) fn claim(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join("pids");
        if let Ok(text) = fs::read_to_string(&path) {
            let previous = parse(&text);
            if let Some(pid) = previous.get("up").copied() {
                if pid != std::process::id() && runs_with_argument(pid, "up") {
                    bail!(
                        "another `mesh up` (pid {pid}) is using {}; stop it first, or pass another --state-dir",
                        state_dir.display()
                    );
                }
            }
            let leftovers: Vec<String> = previous
                .iter()
                .filter(|(name, pid)| {
                    *name != "up" && is_alive(**pid) && runs_with_argument(**pid, "serve")
                })
                .map(|(name, pid)| format!("{name} (pid {pid})"))
                .collect();
            if !leftovers.is_empty() {
                eprintln!(
                    "warning: a previous `mesh up` was killed and left these running: {}",
                    leftovers.join(", ")
                );
            }
        }
        let file = Self {
            path,
            entries: Mutex::new(BTreeMap::from([("up".to_owned(), std::process::id())])),
        };
        file.write()?;
        Ok(file)
    }

    /// The file's path.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Every recorded name and pid.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, u32> {
        self.entries.lock().expect("pid file lock").clone()
    }

    /// Records `name`'s (new) pid.
    pub(crate) fn set(&self, name: &str, pid: u32) {
        self.entries
            .lock()
            .expect("pid file lock")
            .insert(name.to_owned(), pid);
        self.write_or_warn();
    }

    /// Forgets `name` (it has been reaped).
    pub(crate) fn remove(&self, name: &str) {
        self.entries.lock().expect("pid file lock").remove(name);
        self.write_or_warn();
    }

    /// Deletes the file (everything has been stopped).
    pub(crate) fn delete(&self) {
        let _ = fs::remove_file(&self.path);
    }

    fn write_or_warn(&self) {
        if let Err(error) = self.write() {
            eprintln!("warning: {error:#}");
        }
    }

    fn write(&self) -> anyhow::Result<()> {
        // The lock is held until the rename: instances start and stop on
        // several tasks at once, and a writer that rendered older entries
        // must not replace the file after a newer one (nor share its
        // temporary file).
        let entries = self.entries.lock().expect("pid file lock");
        let temporary = self.path.with_extension("tmp");
        fs::write(&temporary, render(&entries))
            .and_then(|()| fs::rename(&temporary, &self.path))
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

fn render(entries: &BTreeMap<String, u32>) -> String {
    entries
        .iter()
        .map(|(name, pid)| format!("{name} {pid}\n"))
        .collect()
}

/// `<name> <pid>` lines; anything else is skipped.
pub(crate) fn parse(text: &str) -> BTreeMap<String, u32> {
    text.lines()
        .filter_map(|line| {
            let (name, pid) = line.trim().split_once(' ')?;
            Some((name.to_owned(), pid.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_name_pid_lines() {
        let entries = BTreeMap::from([("up".to_owned(), 10), ("users-1".to_owned(), 11)]);
        let text = render(&entries);
        assert_eq!(text, "up 10\nusers-1 11\n");
        assert_eq!(parse(&text), entries);
        assert_eq!(
            parse("junk\nconsul 7\nbad x\n"),
            BTreeMap::from([("consul".to_owned(), 7)])
        );
    }

    #[test]
    fn a_live_mesh_up_keeps_its_state_folder() {
        let dir = std::env::temp_dir().join(format!("mesh-pids-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        // Our own pid in the file is not "another mesh up".
        fs::write(dir.join("pids"), format!("up {}\n", std::process::id())).unwrap();
        let file = PidFile::claim(&dir).unwrap();
        file.set("users-1", 42);
        assert_eq!(
            parse(&fs::read_to_string(file.path()).unwrap())["users-1"],
            42
        );
        file.remove("users-1");
        assert!(!parse(&fs::read_to_string(file.path()).unwrap()).contains_key("users-1"));
        file.delete();
        assert!(!file.path().exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
