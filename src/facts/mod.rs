//! What a host is like now, gathered in ONE round trip: a shell script (sent on stdin to `sh -s`)
//! prints sectioned output; each section has a pure parser tested on output captured from real
//! hosts. Also the read of current file contents (only for files whose hash differs, for diffs).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::connect::{shell_quote, CommandError, RemoteCommand, Session};

/// The line that opens each section of the facts output.
const MARK: &str = "@@pgstrap ";

/// What to ask a host about.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub packages: Vec<String>,
    /// Files and directories (stat; sha256 of regular files).
    pub paths: Vec<String>,
    pub services: Vec<String>,
    pub sysctls: Vec<String>,
}

/// Everything gathered about one host.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Facts {
    pub os: OsRelease,
    /// `systemd-detect-virt --container`: `None` on a real machine or VM.
    pub container: Option<String>,
    /// Age of the newest apt package list in seconds (`None`: no lists at all).
    pub apt_lists_age: Option<u64>,
    pub packages: BTreeMap<String, Package>,
    pub paths: BTreeMap<String, PathState>,
    pub services: BTreeMap<String, ServiceStatus>,
    /// Current value (whitespace normalised) or `None` when the key does not exist.
    pub sysctls: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct OsRelease {
    pub id: String,
    pub version_id: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Package {
    /// `dpkg-query` `db:Status-Abbrev`, e.g. `ii `, `rc `.
    pub status: String,
    pub version: String,
}

impl Package {
    pub fn installed(&self) -> bool {
        self.status.starts_with("ii")
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PathState {
    Missing,
    File {
        owner: String,
        group: String,
        mode: u32,
        sha256: String,
    },
    Directory {
        owner: String,
        group: String,
        mode: u32,
    },
    /// A symlink, socket, device…: never what pgstrap wants at a managed path.
    Other {
        kind: String,
    },
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServiceStatus {
    /// `systemctl is-enabled` (`enabled`, `disabled`, `static`, `masked`…; `not-found` when there
    /// is no such unit).
    pub enabled: String,
    /// `systemctl is-active` (`active`, `inactive`, `failed`…).
    pub active: String,
}

impl ServiceStatus {
    pub fn exists(&self) -> bool {
        self.enabled != "not-found"
    }

    /// Enabled in the sense that it starts at boot (or cannot be enabled at all).
    pub fn is_enabled(&self) -> bool {
        matches!(
            self.enabled.as_str(),
            "enabled" | "enabled-runtime" | "static" | "alias" | "indirect" | "generated"
        )
    }

    pub fn is_active(&self) -> bool {
        matches!(self.active.as_str(), "active" | "activating" | "reloading")
    }
}

impl Facts {
    pub fn in_container(&self) -> bool {
        self.container.is_some()
    }

    pub fn path(&self, path: &str) -> &PathState {
        self.paths.get(path).unwrap_or(&PathState::Missing)
    }
}

/// The facts script for `request`. Every name is quoted; nothing secret is in it.
pub fn script(request: &Request) -> String {
    let words = |items: &[String]| {
        items
            .iter()
            .map(|i| shell_quote(i))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut s = String::from("export LC_ALL=C\n");
    s.push_str(&host_sections());
    s.push_str(&format!(
        "echo '{MARK}apt'\nnewest=$(find /var/lib/apt/lists -maxdepth 1 -type f -name '*_Packages*' \
         -printf '%T@\\n' 2>/dev/null | sort -n | tail -n 1 | cut -d. -f1)\necho \"$(date +%s) ${{newest:--}}\"\n"
    ));
    s.push_str(&format!("echo '{MARK}packages'\n"));
    if !request.packages.is_empty() {
        s.push_str(&format!(
            "dpkg-query -W -f='${{Package}}\\t${{db:Status-Abbrev}}\\t${{Version}}\\n' {} 2>/dev/null || true\n",
            words(&request.packages)
        ));
    }
    s.push_str(&format!("echo '{MARK}paths'\n"));
    if !request.paths.is_empty() {
        s.push_str(&format!(
            "for p in {}; do\n  if [ -e \"$p\" ] || [ -L \"$p\" ]; then\n    \
             s=$(stat --printf '%U\\t%G\\t%a\\t%F' -- \"$p\")\n    \
             if [ -f \"$p\" ] && [ ! -L \"$p\" ]; then h=$(sha256sum -- \"$p\"); h=${{h%% *}}; else h=-; fi\n    \
             printf '%s\\t%s\\t%s\\n' \"$s\" \"$h\" \"$p\"\n  \
             else printf -- '-\\t-\\t-\\tmissing\\t-\\t%s\\n' \"$p\"; fi\ndone\n",
            words(&request.paths)
        ));
    }
    s.push_str(&format!("echo '{MARK}services'\n"));
    s.push_str(&services_script(&request.services));
    s.push_str(&format!("echo '{MARK}sysctls'\n"));
    if !request.sysctls.is_empty() {
        s.push_str(&format!(
            "for k in {}; do\n  if v=$(sysctl -n -- \"$k\" 2>/dev/null); then printf 'ok\\t%s\\t%s\\n' \"$k\" \"$v\"; \
             else printf 'missing\\t%s\\n' \"$k\"; fi\ndone\n",
            words(&request.sysctls)
        ));
    }
    s.push_str(&format!("echo '{MARK}end'\n"));
    s
}

/// A line `ENABLED\tACTIVE\tUNIT` for each of `units` ([`parse_services`] reads them): one
/// `systemctl show` for every unit (a block of properties per unit, in the order asked, blank-line
/// separated) instead of two systemctl processes per unit. A unit that does not exist has an
/// empty UnitFileState: `not-found`, as `systemctl is-enabled` says.
pub fn services_script(units: &[String]) -> String {
    if units.is_empty() {
        return String::new();
    }
    let words: Vec<String> = units.iter().map(|u| shell_quote(u)).collect();
    format!(
        "set -- {}\nsystemctl show --property=UnitFileState,ActiveState -- \"$@\" 2>/dev/null | {{\n\
         for u in \"$@\"; do\n  e=; a=\n  \
         while IFS= read -r l && [ -n \"$l\" ]; do\n    \
         case $l in UnitFileState=*) e=${{l#*=}};; ActiveState=*) a=${{l#*=}};; esac\n  done\n  \
         printf '%s\\t%s\\t%s\\n' \"${{e:-not-found}}\" \"${{a:-unknown}}\" \"$u\"\ndone\n}}\n",
        words.join(" ")
    )
}

/// The sections `os` (`/etc/os-release` as it is) and `container` (`systemd-detect-virt
/// --container`): the one reader of a host's release and container, shared by the facts script,
/// the engine's early release read ([`release_script`]), preflight and `status`; read back with
/// [`sections`], [`parse_os_release`] and [`parse_container`] (or [`os_release_of`]).
pub fn host_sections() -> String {
    format!(
        "echo '{MARK}os'\ncat /etc/os-release 2>/dev/null\n\
         echo '{MARK}container'\nsystemd-detect-virt --container 2>/dev/null || true\n"
    )
}

/// Only [`host_sections`]: what the engine reads before it can render a host's desired state
/// (the release decides it; the desired state decides what the full facts script asks).
pub fn release_script() -> String {
    format!("export LC_ALL=C\n{}echo '{MARK}end'\n", host_sections())
}

/// The release in an output holding the `os` section of [`host_sections`].
pub fn os_release_of(output: &str) -> OsRelease {
    parse_os_release(sections(output).get("os").map_or("", String::as_str))
}

/// The text that opens the section `name` in a script's output (for scripts that add their own
/// sections after [`host_sections`]).
pub fn section_mark(name: &str) -> String {
    format!("echo '{MARK}{name}'\n")
}

/// A facts output that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot read the facts output: {}", self.0)
    }
}

/// Split the output into its sections (name → body).
pub fn sections(output: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut body = String::new();
    for line in output.lines() {
        if let Some(name) = line.strip_prefix(MARK) {
            if let Some(previous) = current.take() {
                out.insert(previous, std::mem::take(&mut body));
            }
            current = Some(name.trim().to_owned());
        } else if current.is_some() {
            body.push_str(line);
            body.push('\n');
        }
    }
    if let Some(previous) = current {
        out.insert(previous, body);
    }
    out
}

/// Parse the whole facts output.
pub fn parse(output: &str) -> Result<Facts, ParseError> {
    let sections = sections(output);
    if !sections.contains_key("end") {
        return Err(ParseError("the output ended early (no end marker)".into()));
    }
    let get = |name: &str| sections.get(name).map(String::as_str).unwrap_or("");
    Ok(Facts {
        os: parse_os_release(get("os")),
        container: parse_container(get("container")),
        apt_lists_age: parse_apt(get("apt"))?,
        packages: parse_packages(get("packages"))?,
        paths: parse_paths(get("paths"))?,
        services: parse_services(get("services"))?,
        sysctls: parse_sysctls(get("sysctls"))?,
    })
}

/// `/etc/os-release`: ID and VERSION_ID (values may be quoted).
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut os = OsRelease::default();
    for line in text.lines() {
        if let Some((key, value)) = line.split_once('=') {
            let value = value.trim().trim_matches('"').trim_matches('\'').to_owned();
            match key.trim() {
                "ID" => os.id = value,
                "VERSION_ID" => os.version_id = value,
                _ => {}
            }
        }
    }
    os
}

/// `systemd-detect-virt --container`: `none` (or nothing) → not in a container.
pub fn parse_container(text: &str) -> Option<String> {
    let word = text.trim();
    (!word.is_empty() && word != "none").then(|| word.to_owned())
}

/// `NOW NEWEST` (seconds since the epoch; NEWEST is `-` when there are no lists).
pub fn parse_apt(text: &str) -> Result<Option<u64>, ParseError> {
    let mut words = text.split_whitespace();
    let now: u64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| ParseError(format!("apt section: `{}`", text.trim())))?;
    match words.next() {
        None | Some("-") => Ok(None),
        Some(newest) => {
            let newest: u64 = newest
                .parse()
                .map_err(|_| ParseError(format!("apt section: `{}`", text.trim())))?;
            Ok(Some(now.saturating_sub(newest)))
        }
    }
}

/// `dpkg-query -W -f='${Package}\t${db:Status-Abbrev}\t${Version}\n'`. Packages dpkg has never
/// heard of are simply absent.
pub fn parse_packages(text: &str) -> Result<BTreeMap<String, Package>, ParseError> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.splitn(3, '\t');
        let (Some(name), Some(status), Some(version)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(ParseError(format!("package line `{line}`")));
        };
        // `dpkg-query` names multi-arch packages `name:arch` only when asked; keep the plain name.
        let name = name.split(':').next().unwrap_or(name);
        out.insert(
            name.to_owned(),
            Package {
                status: status.to_owned(),
                version: version.to_owned(),
            },
        );
    }
    Ok(out)
}

/// `OWNER\tGROUP\tMODE\tTYPE\tSHA256\tPATH` per path (`-\t-\t-\tmissing\t-\tPATH` when absent).
pub fn parse_paths(text: &str) -> Result<BTreeMap<String, PathState>, ParseError> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.splitn(6, '\t').collect();
        let [owner, group, mode, kind, sha, path] = fields[..] else {
            return Err(ParseError(format!("path line `{line}`")));
        };
        let mode_value = || {
            u32::from_str_radix(mode, 8).map_err(|_| ParseError(format!("mode `{mode}` of {path}")))
        };
        let state = match kind {
            "missing" => PathState::Missing,
            "regular file" | "regular empty file" => PathState::File {
                owner: owner.to_owned(),
                group: group.to_owned(),
                mode: mode_value()?,
                sha256: sha.to_owned(),
            },
            "directory" => PathState::Directory {
                owner: owner.to_owned(),
                group: group.to_owned(),
                mode: mode_value()?,
            },
            other => PathState::Other {
                kind: other.to_owned(),
            },
        };
        out.insert(path.to_owned(), state);
    }
    Ok(out)
}

/// `ENABLED\tACTIVE\tUNIT` per service.
pub fn parse_services(text: &str) -> Result<BTreeMap<String, ServiceStatus>, ParseError> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.splitn(3, '\t').collect();
        let [enabled, active, unit] = fields[..] else {
            return Err(ParseError(format!("service line `{line}`")));
        };
        out.insert(
            unit.to_owned(),
            ServiceStatus {
                enabled: enabled.to_owned(),
                active: active.to_owned(),
            },
        );
    }
    Ok(out)
}

/// `ok\tKEY\tVALUE` or `missing\tKEY`. Values are whitespace-normalised (`sysctl` separates the
/// numbers of a range with tabs).
pub fn parse_sysctls(text: &str) -> Result<BTreeMap<String, Option<String>>, ParseError> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.splitn(3, '\t').collect();
        match fields[..] {
            ["ok", key, value] => {
                out.insert(key.to_owned(), Some(normalize_sysctl(value)));
            }
            ["ok", key] => {
                out.insert(key.to_owned(), Some(String::new()));
            }
            ["missing", key] => {
                out.insert(key.to_owned(), None);
            }
            _ => return Err(ParseError(format!("sysctl line `{line}`"))),
        }
    }
    Ok(out)
}

/// A sysctl value with runs of whitespace made one space.
pub fn normalize_sysctl(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Read several files in one round trip (for diffs). Missing files are absent from the result.
pub async fn read_files(
    session: &Session,
    paths: &[String],
) -> Result<BTreeMap<String, Vec<u8>>, CommandError> {
    if paths.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut script = String::from("export LC_ALL=C\n");
    script.push_str(&format!(
        "for p in {}; do\n  if [ -f \"$p\" ]; then printf '{MARK}file %s %s\\n' \"$(wc -c < \"$p\")\" \"$p\"; cat -- \"$p\"; fi\ndone\n",
        paths.iter().map(|p| shell_quote(p)).collect::<Vec<_>>().join(" ")
    ));
    let command =
        RemoteCommand::stdin_script(script, format!("read {} files for diffs", paths.len()));
    let output = session.run(&command).await?;
    parse_files(&output.stdout).map_err(|e| crate::connect::CommandError {
        host: session.target.host.clone(),
        command: command.display.clone(),
        status: output.status,
        stderr: e.to_string(),
        hint: None,
    })
}

/// `@@pgstrap file SIZE PATH\n` followed by exactly SIZE bytes, repeated.
pub fn parse_files(mut data: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, ParseError> {
    let mut out = BTreeMap::new();
    let prefix = format!("{MARK}file ");
    while !data.is_empty() {
        let end = data
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| ParseError("file header without end".into()))?;
        let header = String::from_utf8_lossy(&data[..end]).into_owned();
        let rest = header
            .strip_prefix(&prefix)
            .ok_or_else(|| ParseError(format!("file header `{header}`")))?;
        let (size, path) = rest
            .split_once(' ')
            .ok_or_else(|| ParseError(format!("file header `{header}`")))?;
        let size: usize = size
            .trim()
            .parse()
            .map_err(|_| ParseError(format!("file header `{header}`")))?;
        let body_start = end + 1;
        if data.len() < body_start + size {
            return Err(ParseError(format!("{path}: short content")));
        }
        out.insert(
            path.to_owned(),
            data[body_start..body_start + size].to_vec(),
        );
        data = &data[body_start + size..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from a Debian 12 machine in a Docker container (no systemd as PID 1: systemctl
    /// answers `is-enabled` from the unit files and nothing for `is-active`) through the loopback
    /// sshd, with the script of `capture::write_capture_script`.
    const CAPTURED: &str = include_str!("testdata/facts-debian12-docker.txt");

    #[test]
    fn parses_captured_output_of_a_debian_12_host() {
        let facts = parse(CAPTURED).unwrap();
        assert_eq!(facts.os.id, "debian");
        assert_eq!(facts.os.version_id, "12");
        assert_eq!(facts.container.as_deref(), Some("docker"));
        assert_eq!(facts.apt_lists_age, Some(1795326816 - 1795325367));
        assert!(facts.packages["curl"].installed());
        assert!(!facts.packages.contains_key("no-such-package"));
        assert!(
            matches!(facts.path("/etc/hostname"), PathState::File { owner, mode: 0o755, .. } if owner == "root")
        );
        assert!(
            matches!(facts.path("/etc/pgbouncer/pgbouncer.ini"), PathState::File { owner, mode: 0o640, .. } if owner == "postgres")
        );
        assert!(matches!(
            facts.path("/etc"),
            PathState::Directory { mode: 0o755, .. }
        ));
        assert_eq!(facts.path("/etc/no/such"), &PathState::Missing);
        assert!(facts.services["ssh"].is_enabled());
        assert!(!facts.services["ssh"].is_active());
        assert!(!facts.services["no-such-unit"].exists());
        assert_eq!(
            facts.sysctls["net.ipv4.ip_local_port_range"].as_deref(),
            Some("32768 60999")
        );
        assert_eq!(facts.sysctls["vm.swappiness"].as_deref(), Some("60"));
        assert_eq!(facts.sysctls["vm.no_such_key"], None);
    }

    /// Captured from a `pgstrap lab` host (Debian 12 in systemd-nspawn, booted systemd,
    /// pgbouncer installed and running), same script.
    const CAPTURED_NSPAWN: &str = include_str!("testdata/facts-debian12-nspawn.txt");

    #[test]
    fn parses_captured_output_of_a_lab_host() {
        let facts = parse(CAPTURED_NSPAWN).unwrap();
        assert_eq!(facts.container.as_deref(), Some("systemd-nspawn"));
        assert!(facts.services["ssh"].is_enabled() && facts.services["ssh"].is_active());
        assert!(facts.services["pgbouncer"].is_active());
        // systemd 252 prints nothing on stdout for an unknown unit's is-enabled.
        assert!(!facts.services["no-such-unit"].exists());
        assert!(!facts.services["no-such-unit"].is_active());
        assert!(
            matches!(facts.path("/etc/pgbouncer/pgbouncer.ini"), PathState::File { owner, .. } if owner == "postgres")
        );
        assert_eq!(
            facts.sysctls["net.ipv4.ip_nonlocal_bind"].as_deref(),
            Some("0")
        );
    }

    #[test]
    fn output_without_end_marker_is_an_error() {
        let cut = &CAPTURED[..CAPTURED.find("@@pgstrap services").unwrap()];
        assert!(parse(cut).is_err());
    }

    #[test]
    fn os_release_values_may_be_quoted() {
        let os = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nID=debian\n",
        );
        assert_eq!(
            os,
            OsRelease {
                id: "debian".into(),
                version_id: "12".into()
            }
        );
    }

    #[test]
    fn container_none_means_no_container() {
        assert_eq!(parse_container("none\n"), None);
        assert_eq!(parse_container(""), None);
        assert_eq!(
            parse_container("systemd-nspawn\n").as_deref(),
            Some("systemd-nspawn")
        );
    }

    #[test]
    fn apt_age_and_missing_lists() {
        assert_eq!(parse_apt("1000 400\n").unwrap(), Some(600));
        assert_eq!(parse_apt("1000 -\n").unwrap(), None);
        assert!(parse_apt("").is_err());
    }

    #[test]
    fn packages_removed_but_configured_are_not_installed() {
        let p = parse_packages("pgbouncer\trc \t1.18.0-1\ncurl\tii \t7.88.1-10+deb12u8\n").unwrap();
        assert!(!p["pgbouncer"].installed());
        assert!(p["curl"].installed());
    }

    #[test]
    fn paths_of_every_kind() {
        let text = "root\troot\t755\tdirectory\t-\t/etc\npostgres\tpostgres\t640\tregular empty file\te3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\t/etc/x\nroot\troot\t777\tsymbolic link\t-\t/etc/l\n-\t-\t-\tmissing\t-\t/etc/with space\n";
        let p = parse_paths(text).unwrap();
        assert_eq!(
            p["/etc"],
            PathState::Directory {
                owner: "root".into(),
                group: "root".into(),
                mode: 0o755
            }
        );
        assert!(matches!(&p["/etc/x"], PathState::File { mode: 0o640, .. }));
        assert_eq!(
            p["/etc/l"],
            PathState::Other {
                kind: "symbolic link".into()
            }
        );
        assert_eq!(p["/etc/with space"], PathState::Missing);
    }

    #[test]
    fn sysctl_ranges_are_normalised() {
        let s = parse_sysctls("ok\tnet.ipv4.ip_local_port_range\t32768\t60999\nmissing\tvm.x\n")
            .unwrap();
        assert_eq!(
            s["net.ipv4.ip_local_port_range"].as_deref(),
            Some("32768 60999")
        );
        assert_eq!(s["vm.x"], None);
    }

    #[test]
    fn file_contents_are_read_by_length_even_with_markers_inside() {
        let data = b"@@pgstrap file 5 /a\nab\ncd@@pgstrap file 0 /b c\n";
        let files = parse_files(data).unwrap();
        assert_eq!(files["/a"], b"ab\ncd");
        assert_eq!(files["/b c"], b"");
    }

    #[test]
    fn script_quotes_every_name() {
        let s = script(&Request {
            packages: vec!["curl".into()],
            paths: vec!["/etc/it's here".into()],
            services: vec![],
            sysctls: vec![],
        });
        assert!(s.contains(r"'/etc/it'\''s here'"));
        assert!(s.ends_with("echo '@@pgstrap end'\n"));
    }

    #[test]
    fn the_facts_script_is_valid_sh() {
        let s = script(&Request {
            packages: vec!["curl".into()],
            paths: vec!["/etc/hosts".into()],
            services: vec!["etcd".into(), "pgstrap-backup-full.timer".into()],
            sysctls: vec!["vm.swappiness".into()],
        });
        crate::connect::assert_valid_sh(&s);
    }
}

#[cfg(test)]
mod capture {
    /// Writes the facts script used for the captured outputs in `testdata/` (run it on a host
    /// with `sh -s < /tmp/pgstrap-facts.sh` to capture a new one).
    #[test]
    #[ignore = "writes /tmp/pgstrap-facts.sh for capturing real output"]
    fn write_capture_script() {
        let request = super::Request {
            packages: vec!["curl".into(), "pgbouncer".into(), "no-such-package".into()],
            paths: vec![
                "/etc".into(),
                "/etc/hostname".into(),
                "/etc/pgbouncer/pgbouncer.ini".into(),
                "/etc/no/such".into(),
            ],
            services: vec!["ssh".into(), "pgbouncer".into(), "no-such-unit".into()],
            sysctls: vec![
                "net.ipv4.ip_local_port_range".into(),
                "net.ipv4.ip_nonlocal_bind".into(),
                "vm.swappiness".into(),
                "vm.no_such_key".into(),
            ],
        };
        std::fs::write("/tmp/pgstrap-facts.sh", super::script(&request)).unwrap();
    }
}
