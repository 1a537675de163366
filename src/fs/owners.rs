//! Names of users and groups, and their numbers, from the system's files
//! (`/etc/passwd`, `/etc/group`): what `--owner` sends beside each number and what
//! a receiver running as root maps a name back to. Only the files database is read
//! (no NSS modules such as LDAP): a name it does not hold travels by number alone.

use std::collections::HashMap;

/// Where the databases are.
const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";

/// Both databases, read once.
#[derive(Debug, Default)]
pub(crate) struct Owners {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Owners {
    /// Reads both files; one that cannot be read gives no names.
    pub(crate) fn load() -> Owners {
        Owners {
            users: read_database(PASSWD),
            groups: read_database(GROUP),
        }
    }

    pub(crate) fn user(&self, uid: u32) -> Option<String> {
        self.users.get(&uid).cloned()
    }

    pub(crate) fn group(&self, gid: u32) -> Option<String> {
        self.groups.get(&gid).cloned()
    }

    /// The number of the user called `name` here.
    pub(crate) fn uid_of(&self, name: &str) -> Option<u32> {
        find(&self.users, name)
    }

    /// The number of the group called `name` here.
    pub(crate) fn gid_of(&self, name: &str) -> Option<u32> {
        find(&self.groups, name)
    }
}

fn find(names: &HashMap<u32, String>, name: &str) -> Option<u32> {
    names
        .iter()
        .filter(|(_, known)| known.as_str() == name)
        .map(|(&id, _)| id)
        .min()
}

fn read_database(path: &str) -> HashMap<u32, String> {
    std::fs::read_to_string(path)
        .map(|text| parse(&text))
        .unwrap_or_default()
}

/// `name:password:id:...` lines; the first name of an id wins.
fn parse(text: &str) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let (false, Ok(id)) = (name.is_empty(), id.parse::<u32>()) {
            names.entry(id).or_insert_with(|| name.to_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_maps_ids_to_their_first_name_and_back() {
        let names = parse(
            "root:x:0:0::/root:/bin/sh\n# comment\ntoor:x:0:0::/:/bin/sh\nbin:x:1:\n:x:5:\nbad\n",
        );
        let owners = Owners {
            users: names,
            groups: HashMap::new(),
        };
        assert_eq!(owners.user(0).as_deref(), Some("root"));
        assert_eq!(owners.user(1).as_deref(), Some("bin"));
        assert_eq!(owners.user(5), None);
        assert_eq!(owners.uid_of("toor"), None, "the first name of an id wins");
        assert_eq!(owners.uid_of("bin"), Some(1));
    }
}
