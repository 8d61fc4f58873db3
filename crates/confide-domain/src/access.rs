//! Tenancy roles, per-bot grants, API key scopes, and the single rule that turns them into access.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{ApiKeyId, BotId, OrgId, SessionId, UserId};

/// A member's role in an organization.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OrgRole {
    Member,
    Admin,
    Owner,
}

impl OrgRole {
    pub fn as_str(self) -> &'static str {
        match self {
            OrgRole::Owner => "owner",
            OrgRole::Admin => "admin",
            OrgRole::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owner" => Some(OrgRole::Owner),
            "admin" => Some(OrgRole::Admin),
            "member" => Some(OrgRole::Member),
            _ => None,
        }
    }

    /// Owners and admins manage members, bots, keys and read the audit log.
    pub fn manages_org(self) -> bool {
        matches!(self, OrgRole::Owner | OrgRole::Admin)
    }

    /// Whether an actor with this role may give `target` to someone (or change someone who has it).
    /// Only owners create or touch owners; admins manage admins and members.
    pub fn may_assign(self, target: OrgRole) -> bool {
        match self {
            OrgRole::Owner => true,
            OrgRole::Admin => target != OrgRole::Owner,
            OrgRole::Member => false,
        }
    }
}

/// A per-bot grant for a member.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BotPermission {
    Read,
    Write,
}

impl BotPermission {
    pub fn as_str(self) -> &'static str {
        match self {
            BotPermission::Read => "read",
            BotPermission::Write => "write",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(BotPermission::Read),
            "write" => Some(BotPermission::Write),
            _ => None,
        }
    }
}

/// Who may see a bot's conversations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SharingPolicy {
    /// Every member with at least read permission on the bot.
    AllReaders,
    /// Only the members listed on the bot (plus owners and admins).
    ListedMembers,
}

impl SharingPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SharingPolicy::AllReaders => "all_readers",
            SharingPolicy::ListedMembers => "listed_members",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "all_readers" => Some(SharingPolicy::AllReaders),
            "listed_members" => Some(SharingPolicy::ListedMembers),
            _ => None,
        }
    }
}

/// What an API key may do.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
pub enum ApiScope {
    #[serde(rename = "bots:read")]
    BotsRead,
    #[serde(rename = "bots:write")]
    BotsWrite,
    #[serde(rename = "chats:read")]
    ChatsRead,
    #[serde(rename = "chats:write")]
    ChatsWrite,
    #[serde(rename = "stats:read")]
    StatsRead,
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
}

impl ApiScope {
    pub const ALL: [ApiScope; 6] = [
        ApiScope::BotsRead,
        ApiScope::BotsWrite,
        ApiScope::ChatsRead,
        ApiScope::ChatsWrite,
        ApiScope::StatsRead,
        ApiScope::WebhooksWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiScope::BotsRead => "bots:read",
            ApiScope::BotsWrite => "bots:write",
            ApiScope::ChatsRead => "chats:read",
            ApiScope::ChatsWrite => "chats:write",
            ApiScope::StatsRead => "stats:read",
            ApiScope::WebhooksWrite => "webhooks:write",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    /// Whether holding this scope allows what `needed` allows: a write scope includes its read.
    pub fn grants(self, needed: ApiScope) -> bool {
        self == needed
            || matches!(
                (self, needed),
                (ApiScope::BotsWrite, ApiScope::BotsRead)
                    | (ApiScope::ChatsWrite, ApiScope::ChatsRead)
            )
    }
}

/// The authenticated caller of a request, as the web layer resolved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A signed-in person (cookie session or bearer access token).
    User {
        user_id: UserId,
        session_id: SessionId,
    },
    /// An API key: bound to one organization, limited by scopes and optionally one bot.
    ApiKey {
        key_id: ApiKeyId,
        org_id: OrgId,
        scopes: Vec<ApiScope>,
        bot_id: Option<BotId>,
    },
}

/// What a caller may do with one bot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BotAccess {
    None,
    Read,
    Write,
}

impl BotAccess {
    /// The single rule for people: owners and admins have write on every bot in their organization;
    /// members have exactly their grant on this bot.
    pub fn for_member(role: OrgRole, grant: Option<BotPermission>) -> BotAccess {
        if role.manages_org() {
            return BotAccess::Write;
        }
        match grant {
            Some(BotPermission::Write) => BotAccess::Write,
            Some(BotPermission::Read) => BotAccess::Read,
            None => BotAccess::None,
        }
    }

    /// The single rule for API keys: the key's organization, its bot restriction and its scopes.
    pub fn for_api_key(
        key_org: OrgId,
        key_bot: Option<BotId>,
        scopes: &[ApiScope],
        bot_org: OrgId,
        bot: BotId,
    ) -> BotAccess {
        if key_org != bot_org || key_bot.is_some_and(|b| b != bot) {
            return BotAccess::None;
        }
        if scopes.contains(&ApiScope::BotsWrite) {
            BotAccess::Write
        } else if scopes.contains(&ApiScope::BotsRead) {
            BotAccess::Read
        } else {
            BotAccess::None
        }
    }

    pub fn can_read(self) -> bool {
        self >= BotAccess::Read
    }

    pub fn can_write(self) -> bool {
        self == BotAccess::Write
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_without_a_grant_sees_nothing_of_a_bot() {
        assert_eq!(
            BotAccess::for_member(OrgRole::Member, None),
            BotAccess::None
        );
    }

    #[test]
    fn a_read_only_member_cannot_write() {
        let access = BotAccess::for_member(OrgRole::Member, Some(BotPermission::Read));
        assert!(access.can_read());
        assert!(!access.can_write());
    }

    #[test]
    fn admins_write_every_bot() {
        assert!(BotAccess::for_member(OrgRole::Admin, None).can_write());
    }

    #[test]
    fn an_api_key_for_another_bot_or_org_has_no_access() {
        let org = OrgId::new();
        let bot = BotId::new();
        let scopes = [ApiScope::BotsWrite];
        assert_eq!(
            BotAccess::for_api_key(org, Some(BotId::new()), &scopes, org, bot),
            BotAccess::None
        );
        assert_eq!(
            BotAccess::for_api_key(OrgId::new(), None, &scopes, org, bot),
            BotAccess::None
        );
        assert_eq!(
            BotAccess::for_api_key(org, Some(bot), &scopes, org, bot),
            BotAccess::Write
        );
    }

    #[test]
    fn admins_cannot_make_owners() {
        assert!(!OrgRole::Admin.may_assign(OrgRole::Owner));
        assert!(OrgRole::Owner.may_assign(OrgRole::Owner));
        assert!(!OrgRole::Member.may_assign(OrgRole::Member));
    }

    #[test]
    fn a_write_scope_includes_its_read_scope_but_not_the_reverse() {
        assert!(ApiScope::BotsWrite.grants(ApiScope::BotsRead));
        assert!(ApiScope::ChatsWrite.grants(ApiScope::ChatsRead));
        assert!(!ApiScope::BotsRead.grants(ApiScope::BotsWrite));
        assert!(!ApiScope::StatsRead.grants(ApiScope::BotsRead));
    }

    #[test]
    fn scopes_parse_from_their_names() {
        for scope in ApiScope::ALL {
            assert_eq!(ApiScope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(ApiScope::parse("bots:admin"), None);
    }
}
