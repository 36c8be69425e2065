//! Before a node is drained: can the upgrade command's ssh log in to it?
//!
//! An upgrade over ssh that cannot log in (host key not in `known_hosts`, key refused, no
//! route) fails only after the node was drained, and its rollback over the same ssh fails too,
//! leaving the node drained. So when `upgrade.command` runs `ssh`, the executor first logs in
//! the same way (the command's own options and destination) without opening a session
//! (`ssh -N`): a forced command in `authorized_keys` does not run, nothing on the node changes.
//! A login that fails is named with the node, the cause and the fix, and the node is not
//! drained.

use std::fmt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

/// Longest wait for a login, whatever ssh's own `ConnectTimeout`.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// What ssh says when it logs in (at `LogLevel=VERBOSE`).
const AUTHENTICATED: &str = "Authenticated to ";

/// Why ssh could not log in, each with its own fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshProblem {
    /// The node's host key is not in the known_hosts file.
    HostKeyUnknown,
    /// The node presented a host key other than the known one.
    HostKeyChanged,
    /// The node refused the operator's key.
    KeyRefused,
    /// No ssh server answered at the address.
    Unreachable,
    /// ssh failed otherwise (its own words say how).
    Failed,
}

impl SshProblem {
    /// The `error` label of `swarm_upgrade_reconcile_errors_total`.
    pub fn metric_label(self) -> &'static str {
        match self {
            SshProblem::HostKeyUnknown => "ssh_host_key_unknown",
            SshProblem::HostKeyChanged => "ssh_host_key_changed",
            SshProblem::KeyRefused => "ssh_key_refused",
            SshProblem::Unreachable => "ssh_unreachable",
            SshProblem::Failed => "ssh_failed",
        }
    }

    fn from_stderr(stderr: &str) -> Self {
        if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || stderr.contains("has changed and you have requested strict checking")
        {
            SshProblem::HostKeyChanged
        } else if stderr.contains("Host key verification failed") {
            SshProblem::HostKeyUnknown
        } else if stderr.contains("Permission denied") {
            SshProblem::KeyRefused
        } else if [
            "Connection refused",
            "Connection timed out",
            "No route to host",
            "Could not resolve hostname",
            "Network is unreachable",
        ]
        .iter()
        .any(|s| stderr.contains(s))
        {
            SshProblem::Unreachable
        } else {
            SshProblem::Failed
        }
    }
}

/// The login part of an upgrade command that runs ssh: the program, its options and the
/// destination, without the remote command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshLogin {
    program: String,
    options: Vec<String>,
    destination: String,
}

impl SshLogin {
    /// `Some` when `argv` (placeholders expanded) runs `ssh`.
    pub fn from_argv(argv: &[String]) -> Option<Self> {
        let (program, args) = argv.split_first()?;
        if Path::new(program).file_name()? != "ssh" {
            return None;
        }
        let at = destination_index(args)?;
        let mut options = args[..at].to_vec();
        if options.last().is_some_and(|o| o == "--") {
            options.pop();
        }
        Some(Self {
            program: program.clone(),
            options,
            destination: args[at].clone(),
        })
    }

    /// The login alone: no session (`-N`), never a prompt, and the verbose line that says it
    /// logged in. ssh takes the first value of an option, so these win over the command's.
    fn check_argv(&self) -> Vec<String> {
        let mut argv = vec![self.program.clone(), "-N".into()];
        for option in ["BatchMode=yes", "LogLevel=VERBOSE"] {
            argv.extend(["-o".to_string(), option.to_string()]);
        }
        argv.extend(self.options.iter().cloned());
        argv.extend(["--".to_string(), self.destination.clone()]);
        argv
    }

    /// The value of `-o NAME=VALUE` (or `-oNAME=VALUE`), as ssh reads it: the first one.
    fn option(&self, name: &str) -> Option<String> {
        let mut args = self.options.iter();
        while let Some(arg) = args.next() {
            let value = match arg.strip_prefix("-o") {
                Some("") => args.next().map(String::as_str),
                Some(attached) => Some(attached),
                None => None,
            };
            if let Some((key, v)) = value.and_then(|v| v.split_once('='))
                && key.trim().eq_ignore_ascii_case(name)
            {
                return Some(v.trim().to_string());
            }
        }
        None
    }

    /// The value of a one-letter flag (`-i FILE`, `-l USER`), attached or not.
    fn flag(&self, letter: char) -> Option<String> {
        let flag = format!("-{letter}");
        let mut args = self.options.iter();
        while let Some(arg) = args.next() {
            if *arg == flag {
                return args.next().cloned();
            }
            if let Some(attached) = arg.strip_prefix(&flag)
                && !attached.is_empty()
            {
                return Some(attached.to_string());
            }
        }
        None
    }

    fn known_hosts(&self) -> String {
        self.option("UserKnownHostsFile")
            .unwrap_or_else(|| "~/.ssh/known_hosts".into())
    }

    fn user(&self) -> String {
        self.flag('l')
            .or_else(|| self.destination.split_once('@').map(|(u, _)| u.to_string()))
            .unwrap_or_else(|| "the operator's user".into())
    }

    fn host(&self) -> &str {
        self.destination
            .rsplit_once('@')
            .map_or(&self.destination, |(_, h)| h)
    }
}

/// Where the destination is among ssh's arguments: after `--`, else the first argument that
/// is neither an option nor an option's value (ssh's own getopt string says which take one).
fn destination_index(args: &[String]) -> Option<usize> {
    const WITH_VALUE: &str = "BbcDEeFIiJLlmOoPpQRSWw";
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            return (i + 1 < args.len()).then_some(i + 1);
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            return Some(i);
        };
        // `-vT` are flags; `-oX=Y` and `-p22` carry their value; `-o X=Y` takes the next.
        if let Some(at) = flags.find(|c| WITH_VALUE.contains(c))
            && at + 1 == flags.len()
        {
            i += 1;
        }
        i += 1;
    }
    None
}

/// A login that failed, for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshCheckFailure {
    pub problem: SshProblem,
    pub hostname: String,
    login: SshLogin,
    /// ssh's own last words.
    detail: String,
}

impl fmt::Display for SshCheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (node, dest, host) = (&self.hostname, &self.login.destination, self.login.host());
        let known_hosts = self.login.known_hosts();
        write!(
            f,
            "{node}: not drained: the upgrade command's ssh cannot log in to {dest}: "
        )?;
        match self.problem {
            SshProblem::HostKeyUnknown => write!(
                f,
                "the node's host key is not in {known_hosts}. Fix: add it (`ssh-keyscan {host}`, \
                 compared with the node's /etc/ssh/ssh_host_*_key.pub) and deploy known_hosts \
                 again (charts/swarm-upgrade: a new SWARM_UPGRADE_SPEC_REV)"
            )?,
            SshProblem::HostKeyChanged => write!(
                f,
                "the node's host key is not the one in {known_hosts} (it changed, or another \
                 host answers at {host}). Fix: check the node's /etc/ssh/ssh_host_*_key.pub, \
                 replace its line in known_hosts (`ssh-keygen -R {host} -f known_hosts`, then \
                 `ssh-keyscan {host}`) and deploy known_hosts again"
            )?,
            SshProblem::KeyRefused => write!(
                f,
                "the node refused the operator's key{} for {}. Fix: add the key's public half to \
                 that user's authorized_keys on {node} (with the forced command \
                 charts/swarm-upgrade/README.md recommends)",
                self.login
                    .flag('i')
                    .map(|k| format!(" {k}"))
                    .unwrap_or_default(),
                self.login.user()
            )?,
            SshProblem::Unreachable => write!(
                f,
                "no ssh server answers. Fix: check the node's address and that sshd runs on it \
                 and is reachable from where the operator runs"
            )?,
            SshProblem::Failed => write!(
                f,
                "ssh failed. Fix: run the command by hand from where the operator runs \
                 (`{}`) and correct what it says",
                self.login.check_argv().join(" ")
            )?,
        }
        write!(f, " (ssh: {})", self.detail)
    }
}

/// Logs in as `login` would, without a session. `Ok` once ssh says it is authenticated.
pub async fn check_login(login: &SshLogin, hostname: &str) -> Result<(), SshCheckFailure> {
    let fail = |problem, detail: String| SshCheckFailure {
        problem,
        hostname: hostname.to_string(),
        login: login.clone(),
        detail,
    };
    let argv = login.check_argv();
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(SshProblem::Failed, format!("cannot start {}: {e}", argv[0])))?;
    let stderr = child.stderr.take().expect("piped");
    let read = async {
        let mut lines = BufReader::new(stderr).lines();
        let mut said = vec![];
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(AUTHENTICATED) {
                return Ok(());
            }
            said.push(line);
        }
        Err(said)
    };
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, read).await;
    let _ = child.kill().await;
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(said)) => {
            let text = said.join("\n");
            let last = said
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty() && !l.starts_with('@'))
                .cloned()
                .unwrap_or_else(|| "no output".into());
            Err(fail(SshProblem::from_stderr(&text), last))
        }
        Err(_) => Err(fail(
            SshProblem::Unreachable,
            format!("no login within {}s", CHECK_TIMEOUT.as_secs()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn finds_the_login_of_the_charts_command() {
        let command = argv(&[
            "ssh",
            "-o",
            "BatchMode=yes",
            "-oUserKnownHostsFile=/etc/kh",
            "-i",
            "/run/key",
            "-l",
            "swarm-upgrade",
            "--",
            "10.0.0.11",
            "sudo",
            "/usr/local/sbin/upgrade-docker-engine",
            "26.1.5",
        ]);
        let login = SshLogin::from_argv(&command).unwrap();
        assert_eq!(login.destination, "10.0.0.11");
        assert_eq!(login.known_hosts(), "/etc/kh");
        assert_eq!(login.user(), "swarm-upgrade");
        let check = login.check_argv();
        assert_eq!(
            &check[..6],
            &argv(&["ssh", "-N", "-o", "BatchMode=yes", "-o", "LogLevel=VERBOSE"])
        );
        assert_eq!(check.last().unwrap(), "10.0.0.11");
        assert!(!check.iter().any(|a| a == "sudo"), "{check:?}");
    }

    #[test]
    fn finds_the_destination_without_a_double_dash() {
        let login = SshLogin::from_argv(&argv(&[
            "/usr/bin/ssh",
            "-vp22",
            "-T",
            "root@m1",
            "upgrade",
        ]))
        .unwrap();
        assert_eq!(
            (login.destination.as_str(), login.user()),
            ("root@m1", "root".into())
        );
        assert!(SshLogin::from_argv(&argv(&["/usr/local/bin/upgrade", "m1"])).is_none());
        assert!(SshLogin::from_argv(&argv(&["ssh", "-i", "key"])).is_none());
    }

    #[test]
    fn reads_the_cause_from_what_ssh_says() {
        for (said, problem) in [
            (
                "No ED25519 host key is known for m1 and you have requested strict checking.\nHost key verification failed.",
                SshProblem::HostKeyUnknown,
            ),
            (
                "Host key for m1 has changed and you have requested strict checking.\nHost key verification failed.",
                SshProblem::HostKeyChanged,
            ),
            (
                "swarm-upgrade@m1: Permission denied (publickey).",
                SshProblem::KeyRefused,
            ),
            (
                "ssh: connect to host m1 port 22: Connection refused",
                SshProblem::Unreachable,
            ),
            ("Bad configuration option: foo", SshProblem::Failed),
        ] {
            assert_eq!(SshProblem::from_stderr(said), problem, "{said}");
        }
    }
}
