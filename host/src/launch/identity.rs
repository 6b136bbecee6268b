//! Who a plugin runs as: the user and group its config names, looked up at each start.

use super::{Launcher, StartError};

/// Who a plugin runs as.
pub(super) struct Identity {
    /// The configured user's name, for messages.
    pub(super) name: String,
    pub(super) uid: u32,
    pub(super) gid: u32,
}

impl Launcher {
    /// The user and group to run as, when `user` or `group` is configured.
    pub(super) fn identity(&self) -> Result<Option<Identity>, StartError> {
        use nix::unistd::{Group, User};
        let (user, group) = (self.config.user.as_deref(), self.config.group.as_deref());
        if user.is_none() && group.is_none() {
            return Ok(None);
        }
        let refuse = |why: String| StartError::Refused {
            path: self.config.command.clone(),
            why,
        };
        if !nix::unistd::geteuid().is_root() {
            return Err(refuse("`user`/`group` need the host to run as root".into()));
        }
        let found = match user {
            Some(name) => Some(
                User::from_name(name)
                    .map_err(|e| refuse(format!("cannot look up user {name:?}: {e}")))?
                    .ok_or_else(|| refuse(format!("there is no user {name:?}")))?,
            ),
            None => None,
        };
        let gid = match group {
            Some(name) => {
                Group::from_name(name)
                    .map_err(|e| refuse(format!("cannot look up group {name:?}: {e}")))?
                    .ok_or_else(|| refuse(format!("there is no group {name:?}")))?
                    .gid
            }
            None => found.as_ref().map_or(nix::unistd::getgid(), |u| u.gid),
        };
        let uid = found.as_ref().map_or(nix::unistd::getuid(), |u| u.uid);
        Ok(Some(Identity {
            name: user.map_or_else(|| format!("uid {uid}"), str::to_owned),
            uid: uid.as_raw(),
            gid: gid.as_raw(),
        }))
    }
}
