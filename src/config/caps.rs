//! `.ko.yaml`'s `linux_capabilities`: file capabilities for the binary, in ko's syntax (a
//! list of terms, or one string of them split on whitespace). A bare name is permitted; a
//! term `caps<actions>` follows cap_from_text: `+`, `-` and `=` choose the mode, then `p`,
//! `i` and `e` apply it to the listed caps (`=` first clears them from all three; an empty
//! list before `=` is every capability). ko stores the result as the
//! `security.capability` xattr, version 2.

/// Capability names by bit, as the kernel numbers them.
const NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];
/// Every named capability, what `all` and an empty list before `=` mean.
const ALL: u64 = (1 << NAMES.len()) - 1;
/// `VFS_CAP_REVISION_2`, the format ko writes.
const REVISION_2: u32 = 0x0200_0000;
const EFFECTIVE_FLAG: u32 = 1;

/// File capabilities: the permitted and inheritable sets, and whether they are effective.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct FileCaps {
    pub permitted: u64,
    pub inheritable: u64,
    pub effective: bool,
}

impl FileCaps {
    /// The capabilities `terms` give; `None` when nothing is permitted or inheritable (ko
    /// then writes no xattr, so `cap=e` alone is dropped).
    pub fn parse(terms: &[String]) -> Result<Option<FileCaps>, String> {
        let mut caps = FileCaps::default();
        let mut effective = 0u64;
        for term in terms.iter().flat_map(|t| t.split_whitespace()) {
            caps.apply(term, &mut effective)?;
        }
        caps.effective = effective != 0;
        Ok((caps.permitted | caps.inheritable != 0).then_some(caps))
    }

    fn apply(&mut self, term: &str, effective: &mut u64) -> Result<(), String> {
        let Some(at) = term.find(['+', '-', '=']) else {
            self.permitted |= bits(term)?;
            return Ok(());
        };
        let (list, actions) = term.split_at(at);
        let listed = if list.is_empty() && actions.starts_with('=') {
            ALL
        } else {
            bits(list)?
        };
        let mut mode = '+';
        for c in actions.chars() {
            let set = match c {
                '+' | '-' => {
                    mode = c;
                    continue;
                }
                '=' => {
                    mode = '+';
                    self.permitted &= !listed;
                    self.inheritable &= !listed;
                    *effective &= !listed;
                    continue;
                }
                'p' => &mut self.permitted,
                'i' => &mut self.inheritable,
                'e' => &mut *effective,
                other => return Err(format!("{term:?}: unknown flag '{other}'")),
            };
            if mode == '+' {
                *set |= listed;
            } else {
                *set &= !listed;
            }
        }
        Ok(())
    }

    /// The xattr's 20 bytes: magic and flags, then permitted and inheritable, low words
    /// first, each a little-endian u32.
    pub fn xattr(&self) -> [u8; 20] {
        let magic = REVISION_2 | if self.effective { EFFECTIVE_FLAG } else { 0 };
        let words = [
            magic,
            self.permitted as u32,
            self.inheritable as u32,
            (self.permitted >> 32) as u32,
            (self.inheritable >> 32) as u32,
        ];
        let mut out = [0u8; 20];
        for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

/// A comma list of capabilities: names in any case with or without `CAP_`, `all`, or a bit
/// number 0-63.
fn bits(list: &str) -> Result<u64, String> {
    let mut out = 0;
    for name in list.split(',') {
        let lower = name.to_ascii_lowercase();
        let bare = lower.strip_prefix("cap_").unwrap_or(&lower);
        out |= if bare == "all" {
            ALL
        } else if let Some(bit) = NAMES.iter().position(|n| *n == bare) {
            1 << bit
        } else if let Ok(bit @ 0..=63) = name.parse::<u32>() {
            1 << bit
        } else {
            return Err(format!("unknown capability: {name:?}"));
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<FileCaps>, String> {
        FileCaps::parse(&[text.to_string()])
    }

    fn hex(caps: FileCaps) -> String {
        caps.xattr()
            .chunks(4)
            .map(|c| c.iter().map(|b| format!("{b:02x}")).collect::<String>())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn the_bytes_ko_writes() {
        let caps = parse("net_bind_service CAP_CHOWN=ep 40").unwrap().unwrap();
        assert_eq!(hex(caps), "01000002 01040000 00000000 00010000 00000000");
        // ko's own test config: two bare names, permitted only.
        let caps = FileCaps::parse(&["net_bind_service".into(), "chown".into()])
            .unwrap()
            .unwrap();
        assert_eq!(hex(caps), "00000002 01040000 00000000 00000000 00000000");
    }

    #[test]
    fn actions_follow_cap_from_text() {
        let c = parse("=ep").unwrap().unwrap();
        assert_eq!((c.permitted, c.inheritable, c.effective), (ALL, 0, true));
        let c = parse("chown,kill+pi-p").unwrap().unwrap();
        assert_eq!(
            (c.permitted, c.inheritable, c.effective),
            (0, 0b10_0001, false)
        );
        let c = parse("all=p chown-p").unwrap().unwrap();
        assert_eq!(c.permitted, ALL & !1);
        // Effective alone, with nothing permitted, writes nothing.
        assert_eq!(parse("chown+e").unwrap(), None);
        assert_eq!(FileCaps::parse(&[]).unwrap(), None);
    }

    #[test]
    fn bad_terms_are_named() {
        assert_eq!(parse("nope").unwrap_err(), "unknown capability: \"nope\"");
        assert_eq!(parse("64").unwrap_err(), "unknown capability: \"64\"");
        assert_eq!(
            parse("chown+x").unwrap_err(),
            "\"chown+x\": unknown flag 'x'"
        );
        assert_eq!(parse("+p").unwrap_err(), "unknown capability: \"\"");
    }
}
