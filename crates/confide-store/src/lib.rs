//! Storage: the `Store` trait and its SQL implementation for SQLite and PostgreSQL.
//!
//! Both databases are reached through one implementation (`SqlStore`) written in the SQL they share;
//! each database keeps its own migrations. Every query takes the organization a row must belong to,
//! so a cross-tenant id simply finds nothing.

mod audit;
pub mod models;
mod sql;
#[cfg(feature = "testing")]
pub mod testing;

use async_trait::async_trait;
use confide_domain::{
    AddressBlockId, ApiKeyId, BotId, BotPermission, ConversationId, DialogueId, IdentityKeyId,
    InvitationId, MessageId, NudgeId, OrgId, OrgRole, SessionId, SharingPolicy, SourceId, TicketId,
    TicketStatus, TrustedAddressId, UserId, WebhookDeliveryId, WebhookId,
};

pub use audit::{GENESIS_HASH, audit_event_hash};
pub use models::*;
pub use sql::{Backend, SqlStore};

/// One error type for the storage layer; the web layer maps `Conflict` and `NotFound`, the rest is a 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (e.g. an email already registered).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A write named a row that does not exist, or one outside the tenant it must belong to
    /// (e.g. a grant for someone who is not a member of the bot's organization).
    #[error("not found: {0}")]
    NotFound(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

// Constraint violations are answers, not failures: a duplicate is a conflict, a dangling reference
// a missing row. Only the constraint's name is kept; the offending value never leaves the database.
impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            // PostgreSQL names the constraint; SQLite says "UNIQUE constraint failed: table.column".
            let what = db
                .constraint()
                .map_or_else(|| db.message().to_owned(), str::to_owned);
            match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => return StoreError::Conflict(what),
                sqlx::error::ErrorKind::ForeignKeyViolation => return StoreError::NotFound(what),
                _ => {}
            }
        }
        StoreError::Database(err)
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> StoreResult<()>;

    // Organizations and people.
    /// Creates an organization and its first owner in one transaction.
    async fn create_org_with_owner(&self, org: &Organization, owner: &User) -> StoreResult<()>;
    /// Adds an organization for an existing user, who becomes its owner.
    async fn create_org_for_user(&self, org: &Organization, owner: UserId) -> StoreResult<()>;
    async fn get_org(&self, org: OrgId) -> StoreResult<Option<Organization>>;
    async fn rename_org(&self, org: OrgId, name: &str) -> StoreResult<bool>;
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn get_user(&self, user: UserId) -> StoreResult<Option<User>>;
    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    async fn set_password_hash(&self, user: UserId, hash: &str, changed_at: i64)
    -> StoreResult<()>;
    /// Replaces an imported or outdated hash without counting as a password change.
    async fn upgrade_password_hash(&self, user: UserId, hash: &str) -> StoreResult<()>;
    async fn set_last_login(&self, user: UserId, at: i64) -> StoreResult<()>;

    // Memberships.
    async fn add_member(&self, membership: &Membership) -> StoreResult<()>;
    async fn get_membership(&self, org: OrgId, user: UserId) -> StoreResult<Option<Membership>>;
    async fn list_members(&self, org: OrgId) -> StoreResult<Vec<Member>>;
    async fn list_user_orgs(&self, user: UserId) -> StoreResult<Vec<(Organization, OrgRole)>>;
    async fn set_member_role(&self, org: OrgId, user: UserId, role: OrgRole) -> StoreResult<bool>;
    /// Removes the membership, the member's grants on the organization's bots and their places on
    /// those bots' conversation viewer lists, in one transaction.
    async fn remove_member(&self, org: OrgId, user: UserId) -> StoreResult<bool>;
    async fn count_owners(&self, org: OrgId) -> StoreResult<i64>;

    // Invitations.
    async fn create_invitation(&self, invitation: &Invitation) -> StoreResult<()>;
    async fn get_invitation(&self, id: InvitationId) -> StoreResult<Option<Invitation>>;
    async fn list_invitations(&self, org: OrgId) -> StoreResult<Vec<Invitation>>;
    async fn revoke_invitation(&self, org: OrgId, id: InvitationId, at: i64) -> StoreResult<bool>;
    /// Marks the invitation used and adds the membership in one transaction; `new_user` is created
    /// first when the invitee has no account yet. False when it was already used, revoked or expired
    /// at `at`, or when `membership` is not for the invitation's organization and role.
    async fn accept_invitation(
        &self,
        id: InvitationId,
        new_user: Option<&User>,
        membership: &Membership,
        at: i64,
    ) -> StoreResult<bool>;

    // Chatbots and their permissions.
    async fn create_bot(&self, bot: &Chatbot) -> StoreResult<()>;
    async fn get_bot(&self, org: OrgId, bot: BotId) -> StoreResult<Option<Chatbot>>;
    async fn get_bot_by_widget_key(&self, key: &str) -> StoreResult<Option<Chatbot>>;
    /// Every bot of every organization (a node's start-up work: warming knowledge indexes).
    async fn list_all_bots(&self) -> StoreResult<Vec<Chatbot>>;
    async fn list_bots(&self, org: OrgId) -> StoreResult<Vec<Chatbot>>;
    async fn update_bot(
        &self,
        org: OrgId,
        bot: BotId,
        name: Option<&str>,
        sharing_policy: Option<SharingPolicy>,
        at: i64,
    ) -> StoreResult<Option<Chatbot>>;
    async fn delete_bot(&self, org: OrgId, bot: BotId) -> StoreResult<bool>;
    /// Sets the bot's avatar (`None` removes it) and answers the one it replaced; `NotFound`
    /// when the organization has no such bot. Changes running at once each get back exactly
    /// what they replaced, so each replaced object can be removed once.
    async fn set_bot_avatar(
        &self,
        org: OrgId,
        bot: BotId,
        avatar: Option<&BotAvatar>,
        at: i64,
    ) -> StoreResult<Option<BotAvatar>>;
    async fn get_bot_grant(&self, bot: BotId, user: UserId) -> StoreResult<Option<BotPermission>>;
    /// `None` removes the grant. Only members of the bot's organization can be granted anything:
    /// `NotFound` otherwise.
    async fn set_bot_grant(
        &self,
        bot: BotId,
        user: UserId,
        permission: Option<BotPermission>,
    ) -> StoreResult<()>;
    async fn list_bot_grants(&self, bot: BotId) -> StoreResult<Vec<BotGrant>>;
    /// The user's grants on the bots of one organization.
    async fn list_user_grants(&self, org: OrgId, user: UserId) -> StoreResult<Vec<BotGrant>>;
    /// Replaces the list in one transaction; `NotFound` (and nothing changed) when one of the users
    /// is not a member of the bot's organization.
    async fn set_conversation_viewers(&self, bot: BotId, users: &[UserId]) -> StoreResult<()>;
    async fn list_conversation_viewers(&self, bot: BotId) -> StoreResult<Vec<UserId>>;

    // Sessions.
    async fn create_session(&self, session: &Session) -> StoreResult<()>;
    async fn get_session(&self, id: SessionId) -> StoreResult<Option<Session>>;
    async fn get_session_by_token_hash(&self, hash: &str) -> StoreResult<Option<Session>>;
    async fn touch_session(&self, id: SessionId, at: i64) -> StoreResult<()>;
    async fn revoke_session(&self, user: UserId, id: SessionId, at: i64) -> StoreResult<bool>;
    /// Revokes every live session of the user except `keep`; returns how many.
    async fn revoke_user_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        at: i64,
    ) -> StoreResult<u64>;
    /// Sessions not revoked and not past their absolute expiry.
    async fn list_live_sessions(&self, user: UserId, now: i64) -> StoreResult<Vec<Session>>;

    // API keys.
    /// `NotFound` when the key is restricted to a bot outside its organization.
    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()>;
    async fn get_api_key_by_prefix(&self, prefix: &str) -> StoreResult<Option<ApiKey>>;
    async fn get_api_key(&self, org: OrgId, id: ApiKeyId) -> StoreResult<Option<ApiKey>>;
    async fn list_api_keys(&self, org: OrgId) -> StoreResult<Vec<ApiKey>>;
    async fn revoke_api_key(&self, org: OrgId, id: ApiKeyId, at: i64) -> StoreResult<bool>;
    async fn touch_api_key(&self, id: ApiKeyId, at: i64) -> StoreResult<()>;

    // Login attempts and lockouts.
    async fn record_login_attempt(
        &self,
        email: &str,
        ip: &str,
        at: i64,
        success: bool,
    ) -> StoreResult<()>;
    /// Failures for the address since `since`, not counting any before its last success.
    async fn count_email_failures(&self, email: &str, since: i64) -> StoreResult<i64>;
    async fn count_ip_failures(&self, ip: &str, since: i64) -> StoreResult<i64>;
    async fn get_lockout(&self, subject: &str) -> StoreResult<Option<Lockout>>;
    async fn put_lockout(&self, lockout: &Lockout) -> StoreResult<()>;
    /// Lifts a lockout and forgets the failures that led to it (admin unlock).
    async fn clear_lockout(&self, subject: &str, email: Option<&str>) -> StoreResult<()>;

    // Chat.
    /// The bot's chat settings (defaults until first saved).
    async fn get_chat_settings(&self, bot: BotId) -> StoreResult<ChatSettings>;
    async fn put_chat_settings(
        &self,
        bot: BotId,
        settings: &ChatSettings,
        at: i64,
    ) -> StoreResult<()>;
    async fn create_conversation(&self, conversation: &Conversation) -> StoreResult<()>;
    /// The bot's Application API conversation with `conversation.visitor_id` (the caller's user
    /// id), created from `conversation` (as source `api`) when there is none yet. Two callers
    /// racing for a new user get the same one. Not found when the bot is not the organization's.
    async fn find_or_create_api_conversation(
        &self,
        conversation: &Conversation,
    ) -> StoreResult<Conversation>;
    /// Conflict when the bot already trusts the same key.
    async fn add_identity_key(&self, key: &IdentityKey) -> StoreResult<()>;
    /// Oldest first.
    async fn list_identity_keys(&self, bot: BotId) -> StoreResult<Vec<IdentityKey>>;
    async fn delete_identity_key(&self, bot: BotId, id: IdentityKeyId) -> StoreResult<bool>;
    /// The conversation, if it belongs to that bot.
    async fn get_conversation(
        &self,
        bot: BotId,
        id: ConversationId,
    ) -> StoreResult<Option<Conversation>>;
    /// The conversation with this id, whatever its bot: only for `GET /api/v1/chats/{id}`, which
    /// then authorizes the caller on the conversation's own organization and bot.
    async fn find_conversation(&self, id: ConversationId) -> StoreResult<Option<Conversation>>;
    /// Sets (or clears) the conversation's language; false when it is not the bot's.
    /// Records the conversation's latest exchange: the language it was answered in and the
    /// dialogue that answered (`None`: the fallback), whose follow-ups and buttons come next.
    async fn set_conversation_exchange(
        &self,
        bot: BotId,
        id: ConversationId,
        language_code: Option<&str>,
        last_dialogue: Option<DialogueId>,
    ) -> StoreResult<bool>;
    /// Marks the conversation as the chat of a verified visitor; false when it belongs to another
    /// verified identity already (or is not the bot's).
    async fn verify_conversation(
        &self,
        bot: BotId,
        id: ConversationId,
        user_id: &str,
        at: i64,
    ) -> StoreResult<bool>;
    // Dialogues and context memory.
    async fn create_dialogue(&self, dialogue: &Dialogue) -> StoreResult<()>;
    /// In the order they are tried.
    async fn list_dialogues(&self, bot: BotId) -> StoreResult<Vec<Dialogue>>;
    async fn get_dialogue(&self, bot: BotId, id: DialogueId) -> StoreResult<Option<Dialogue>>;
    /// False when the dialogue is not the bot's.
    async fn update_dialogue(&self, dialogue: &Dialogue) -> StoreResult<bool>;
    async fn delete_dialogue(&self, bot: BotId, id: DialogueId) -> StoreResult<bool>;
    /// Gives the bot's dialogues the positions 0, 1, ... in this order, in one transaction.
    async fn reorder_dialogues(&self, bot: BotId, order: &[DialogueId]) -> StoreResult<()>;
    /// Both namespaces of the conversation's context memory in one read.
    async fn get_memory(&self, conversation: ConversationId) -> StoreResult<ContextMemory>;
    /// Writes several entries at once, all or none: false (and nothing written) when the
    /// namespace would then hold more than `max_keys` keys.
    async fn merge_context(
        &self,
        conversation: ConversationId,
        namespace: ContextNamespace,
        entries: &[(String, String)],
        max_keys: usize,
        at: i64,
    ) -> StoreResult<bool>;

    // Statistics.
    /// Adds the increment to the bot's counts of the hour `delta.hour` falls in.
    async fn count_statistics(&self, bot: BotId, delta: &HourlyStatistics) -> StoreResult<()>;
    /// The bot's hours from `from` (inclusive) to `to` (exclusive), oldest first; hours without
    /// activity are absent.
    async fn statistics(
        &self,
        bot: BotId,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<HourlyStatistics>>;

    // Spam protection.
    async fn add_address_block(&self, block: &AddressBlock) -> StoreResult<()>;
    /// Blocks in force at `now` (persistent ones and unexpired temporary ones), newest first.
    async fn active_address_blocks(&self, org: OrgId, now: i64) -> StoreResult<Vec<AddressBlock>>;
    /// Automatic blocks of exactly this network created since `since`, expired or not.
    async fn count_automatic_blocks(
        &self,
        org: OrgId,
        network: &str,
        since: i64,
    ) -> StoreResult<i64>;
    async fn delete_address_block(&self, org: OrgId, id: AddressBlockId) -> StoreResult<bool>;
    /// Conflict when the organization already trusts that network.
    async fn add_trusted_address(&self, trusted: &TrustedAddress) -> StoreResult<()>;
    /// Oldest first.
    async fn list_trusted_addresses(&self, org: OrgId) -> StoreResult<Vec<TrustedAddress>>;
    async fn delete_trusted_address(&self, org: OrgId, id: TrustedAddressId) -> StoreResult<bool>;

    // Handover transitions. Each queues its webhook `event` in the same transaction as the change
    // and answers how many deliveries it queued, or `None` when the transition does not apply.
    /// The visitor asks for a human: from `bot` or `ended` to `requested`.
    async fn request_handover(
        &self,
        bot: BotId,
        id: ConversationId,
        at: i64,
        event: &OutboxEvent,
    ) -> StoreResult<Option<u64>>;
    /// An agent takes a requested conversation. The same agent taking it again is `Some(0)`: no
    /// change, no event.
    async fn take_handover(
        &self,
        bot: BotId,
        id: ConversationId,
        agent: &str,
        at: i64,
        event: &OutboxEvent,
    ) -> StoreResult<Option<u64>>;
    /// From `requested` or `agent` to `ended`.
    async fn end_handover(
        &self,
        bot: BotId,
        id: ConversationId,
        at: i64,
        event: &OutboxEvent,
    ) -> StoreResult<Option<u64>>;

    /// Open conversations (any bot) whose visitor wrote and which have been quiet since before
    /// `before`, quietest first; those waiting for or talking to an agent are left to the agents.
    async fn idle_conversations(&self, before: i64, limit: i64) -> StoreResult<Vec<Conversation>>;
    /// Ends the conversation if it is still open and still quiet since `last_message_at`, queueing
    /// `event` in the same transaction; `None` when another node ended it or a message came in.
    async fn end_conversation(
        &self,
        id: ConversationId,
        last_message_at: i64,
        at: i64,
        event: &OutboxEvent,
    ) -> StoreResult<Option<u64>>;
    /// The bot's conversations in these handover states, oldest request first.
    async fn list_handovers(
        &self,
        bot: BotId,
        states: &[HandoverState],
        limit: i64,
    ) -> StoreResult<Vec<Conversation>>;

    // Tickets. Every write carries its `ticket.updated` event, queued in the same transaction.
    /// Creates the ticket (version 1) or saves a change to it (its version one more than the
    /// stored one's). `None` when it does not apply: the conversation already has a ticket, or the
    /// ticket changed since it was read.
    // Knowledge.
    /// Adds a source unless the bot has `max_per_bot` already; false then.
    async fn create_knowledge_source(
        &self,
        source: &KnowledgeSource,
        max_per_bot: i64,
    ) -> StoreResult<bool>;
    async fn get_knowledge_source(
        &self,
        bot: BotId,
        id: SourceId,
    ) -> StoreResult<Option<KnowledgeSource>>;
    /// A source by its id alone (a download link names only the file); its `org_id` and
    /// `bot_id` say whose it is, and every caller checks them.
    async fn find_knowledge_source(&self, id: SourceId) -> StoreResult<Option<KnowledgeSource>>;
    /// Oldest first.
    async fn list_knowledge_sources(&self, bot: BotId) -> StoreResult<Vec<KnowledgeSource>>;
    /// Claims one source due for work at `now` (its previous claim, if any, expired) until
    /// `until`, under `token`.
    async fn claim_knowledge_source(
        &self,
        now: i64,
        token: &str,
        until: i64,
    ) -> StoreResult<Option<KnowledgeSource>>;
    /// Records a worker's step, if `token` still holds the claim (which is extended to
    /// `lease_until` unless the step releases it); false when it does not. A rejection removes
    /// the source's passages (a source processed again may have had some), bumping the bot's
    /// `knowledge_version` when there were any.
    async fn step_knowledge_source(
        &self,
        id: SourceId,
        token: &str,
        step: &SourceStep,
        lease_until: i64,
    ) -> StoreResult<bool>;
    /// Queues a settled source (`current`, as read) to be processed again, if it is unchanged
    /// since, not quarantined and not held: an imported page is fetched again (its stored copy
    /// is the caller's to remove), a file extracted again. Its passages answer until the new
    /// ones replace them. Answers the source as queued; `None` when it did not apply.
    async fn requeue_knowledge_source(
        &self,
        current: &KnowledgeSource,
        at: i64,
    ) -> StoreResult<Option<KnowledgeSource>>;
    /// Records what a worker fetched for the source (an imported page, stored under
    /// `object_key`), if `token` still holds the claim.
    async fn attach_knowledge_content(
        &self,
        id: SourceId,
        token: &str,
        object_key: &str,
        file_kind: &str,
        size: i64,
        at: i64,
    ) -> StoreResult<bool>;
    /// Replaces the source's chunks, makes it ready and bumps its bot's `knowledge_version`, in
    /// one transaction, if `token` still holds the claim.
    async fn finish_knowledge_source(
        &self,
        id: SourceId,
        token: &str,
        chunks: &[KnowledgeChunk],
        language: Option<&str>,
        title: Option<&str>,
        at: i64,
    ) -> StoreResult<bool>;
    /// Deletes the source with its chunks, and a site import's pages with theirs (bumping the
    /// bot's `knowledge_version` when there were any); answers what was deleted (the source, then
    /// its pages), so stored content can be removed too.
    async fn delete_knowledge_source(
        &self,
        bot: BotId,
        id: SourceId,
    ) -> StoreResult<Option<(KnowledgeSource, Vec<KnowledgeSource>)>>;
    /// Gives a site import's page (`current`, as read) a newly fetched copy to scan and learn
    /// from, if it is unchanged since and not held by a worker; its passages answer until the
    /// new ones replace them. The old copy is the caller's to remove; false when it did not apply.
    async fn renew_knowledge_page(
        &self,
        current: &KnowledgeSource,
        object_key: &str,
        file_kind: &str,
        size: i64,
        at: i64,
    ) -> StoreResult<bool>;
    /// A source's chunks in order.
    async fn knowledge_chunks(
        &self,
        bot: BotId,
        source: SourceId,
    ) -> StoreResult<Vec<KnowledgeChunk>>;

    // Dense retrieval.
    /// Passages (of any bot) with no embedding from `model` yet, at most `limit`.
    async fn knowledge_embeddings_due(
        &self,
        model: &str,
        limit: i64,
    ) -> StoreResult<Vec<KnowledgeChunk>>;
    /// Stores passages' embeddings (encoded vectors) from `model`, replacing any from another
    /// model, and bumps each of their bots' `embeddings_version`; a passage deleted meanwhile is
    /// skipped. `None`: the endpoint refused the passage; it is not due again for `model`.
    async fn put_knowledge_embeddings(
        &self,
        model: &str,
        vectors: &[(confide_domain::ChunkId, Option<String>)],
    ) -> StoreResult<()>;
    /// The bot's embeddings from `model` (not the passages it refused).
    async fn knowledge_embeddings(
        &self,
        bot: BotId,
        model: &str,
    ) -> StoreResult<Vec<(confide_domain::ChunkId, String)>>;
    /// The bot's passages with these ids (those that still exist), in the order asked.
    async fn knowledge_chunks_with_ids(
        &self,
        bot: BotId,
        ids: &[confide_domain::ChunkId],
    ) -> StoreResult<Vec<KnowledgeChunk>>;

    // Generated answers' token budget, per bot and calendar month (`YYYY-MM`, UTC).
    /// Adds `tokens` to what the bot used in `month` if the total stays within `budget`; false
    /// (nothing added) when it would not.
    async fn reserve_answer_tokens(
        &self,
        bot: BotId,
        month: &str,
        tokens: i64,
        budget: i64,
    ) -> StoreResult<bool>;
    /// Corrects what the bot used in `month` by `delta` (what the model reported less what was
    /// reserved), never below zero.
    async fn settle_answer_tokens(&self, bot: BotId, month: &str, delta: i64) -> StoreResult<()>;
    /// The tokens the bot used in `month`.
    async fn answer_tokens_used(&self, bot: BotId, month: &str) -> StoreResult<i64>;

    async fn write_ticket(&self, ticket: &Ticket, event: &OutboxEvent) -> StoreResult<Option<u64>>;
    async fn get_ticket(&self, bot: BotId, id: TicketId) -> StoreResult<Option<Ticket>>;
    /// The conversation's ticket, if it has one.
    async fn conversation_ticket(
        &self,
        conversation: ConversationId,
    ) -> StoreResult<Option<Ticket>>;
    /// The bot's tickets (in `status`, or all), oldest first, starting after `after`; at most
    /// `limit` (1..=1000).
    async fn list_tickets(
        &self,
        bot: BotId,
        status: Option<TicketStatus>,
        after: Option<TicketPosition>,
        limit: i64,
    ) -> StoreResult<Vec<Ticket>>;
    /// Handover requests (any bot) that have waited their bot's `ticket_after_seconds` by `now`
    /// and were not turned into a ticket yet, longest waiting first.
    async fn unanswered_handovers(&self, now: i64, limit: i64) -> StoreResult<Vec<Conversation>>;
    /// Marks the conversation's handover request as turned into a ticket, if it is still the same
    /// waiting request and no other node did so; with `change`, writes the ticket as
    /// [`Store::write_ticket`] does in the same transaction. `None` when it does not apply.
    async fn escalate_handover(
        &self,
        conversation: &Conversation,
        at: i64,
        change: Option<(&Ticket, &OutboxEvent)>,
    ) -> StoreResult<Option<u64>>;

    // Nudges.
    async fn create_nudge(&self, nudge: &Nudge) -> StoreResult<()>;
    /// Oldest first.
    async fn list_nudges(&self, bot: BotId) -> StoreResult<Vec<Nudge>>;
    async fn get_nudge(&self, bot: BotId, id: NudgeId) -> StoreResult<Option<Nudge>>;
    async fn update_nudge(&self, nudge: &Nudge) -> StoreResult<bool>;
    async fn delete_nudge(&self, bot: BotId, id: NudgeId) -> StoreResult<bool>;

    /// Queues an event that comes with no other write (a nudge's form submission) for every
    /// enabled endpoint of its bot that subscribes to it; answers how many deliveries were queued.
    async fn enqueue_event(&self, event: &OutboxEvent) -> StoreResult<u64>;
    // The chat log.
    /// The bot's conversations that match `filter`, newest activity first (ties by id, highest
    /// first), starting after `after`; at most `limit` (1..=1000).
    async fn list_chats(
        &self,
        bot: BotId,
        filter: &ChatLogFilter,
        after: Option<ChatLogPosition>,
        limit: i64,
    ) -> StoreResult<Vec<ChatLogEntry>>;
    /// The conversation with its labels, if it belongs to that bot.
    async fn get_chat(&self, bot: BotId, id: ConversationId) -> StoreResult<Option<ChatLogEntry>>;
    /// Replaces the conversation's labels (already normalized and distinct) in one transaction;
    /// false when it is not the bot's.
    async fn set_chat_labels(
        &self,
        bot: BotId,
        id: ConversationId,
        labels: &[String],
    ) -> StoreResult<bool>;
    /// Erases the conversation and everything about it in one transaction: its messages, context
    /// memory, labels, and the webhook deliveries (with their attempts) that carry its messages.
    /// Statistics hold nothing of it and stay. False when it is not the bot's.
    async fn delete_conversation(&self, bot: BotId, id: ConversationId) -> StoreResult<bool>;
    /// The conversation's messages before `before` (all, without it), newest first, at most
    /// `limit` (1..=1000).
    async fn list_messages_before(
        &self,
        conversation: ConversationId,
        before: Option<MessagePosition>,
        limit: i64,
    ) -> StoreResult<Vec<Message>>;

    /// Stores the message and moves the conversation's last-message time.
    async fn add_message(&self, message: &Message) -> StoreResult<()>;
    /// One message of the conversation.
    async fn get_message(
        &self,
        conversation: ConversationId,
        id: MessageId,
    ) -> StoreResult<Option<Message>>;
    /// The latest `limit` messages, oldest first (what an agent or a reconnecting widget needs
    /// of a long chat is its end).
    async fn list_messages(
        &self,
        conversation: ConversationId,
        limit: i64,
    ) -> StoreResult<Vec<Message>>;

    /// Stores the message like [`Store::add_message`] and, in the same transaction, queues `event`
    /// for every enabled endpoint of its bot that subscribes to it: one cannot exist without the
    /// other. Answers how many deliveries were queued.
    async fn add_message_with_event(
        &self,
        message: &Message,
        event: &OutboxEvent,
    ) -> StoreResult<u64>;

    // Webhooks.
    async fn create_webhook(&self, webhook: &Webhook) -> StoreResult<()>;
    /// Oldest first.
    async fn list_webhooks(&self, org: OrgId, bot: BotId) -> StoreResult<Vec<Webhook>>;
    async fn get_webhook(
        &self,
        org: OrgId,
        bot: BotId,
        id: WebhookId,
    ) -> StoreResult<Option<Webhook>>;
    async fn update_webhook(
        &self,
        org: OrgId,
        bot: BotId,
        id: WebhookId,
        update: &WebhookUpdate,
        at: i64,
    ) -> StoreResult<Option<Webhook>>;
    /// The current secret becomes the previous one (signing until `previous_expires_at`; it
    /// replaces any older previous secret) and `sealed` the current one.
    async fn rotate_webhook_secret(
        &self,
        org: OrgId,
        bot: BotId,
        id: WebhookId,
        sealed: &str,
        previous_expires_at: i64,
        at: i64,
    ) -> StoreResult<Option<Webhook>>;
    /// Also drops the endpoint's queued deliveries and their log.
    async fn delete_webhook(&self, org: OrgId, bot: BotId, id: WebhookId) -> StoreResult<bool>;
    /// For the delivery worker, which holds a delivery and no tenant.
    async fn get_webhook_for_delivery(&self, id: WebhookId) -> StoreResult<Option<Webhook>>;

    // The outbox.
    /// Claims up to `limit` pending deliveries that are due at `now`, of enabled endpoints, without
    /// going past any endpoint's `max_concurrency` of claims in force. A claim lasts until
    /// `lease_until`; a worker that dies loses its claims then. PostgreSQL skips rows other
    /// workers hold (`FOR UPDATE SKIP LOCKED`); SQLite claims in one atomic statement.
    async fn claim_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDelivery>>;
    /// Records an attempt made under `owner`'s claim and moves the delivery on (delivered, due
    /// again at a time, or dead). False, and nothing written, when the claim was lost meanwhile.
    async fn finish_delivery(
        &self,
        id: WebhookDeliveryId,
        owner: &str,
        attempt: &WebhookAttempt,
        outcome: AttemptOutcome,
    ) -> StoreResult<bool>;
    /// Newest first; `before` (a delivery id) pages backwards.
    async fn list_deliveries(
        &self,
        webhook: WebhookId,
        state: Option<DeliveryState>,
        before: Option<WebhookDeliveryId>,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDelivery>>;
    async fn get_delivery(
        &self,
        webhook: WebhookId,
        id: WebhookDeliveryId,
    ) -> StoreResult<Option<WebhookDelivery>>;
    /// Oldest first.
    async fn list_attempts(&self, delivery: WebhookDeliveryId) -> StoreResult<Vec<WebhookAttempt>>;
    /// Makes a delivered or dead delivery due again at `now`, with a fresh retry window and the
    /// same id. False when it is pending already (or not the endpoint's).
    async fn redeliver(
        &self,
        webhook: WebhookId,
        id: WebhookDeliveryId,
        now: i64,
    ) -> StoreResult<bool>;

    // Inbox backups.
    async fn get_inbox_backup(&self, org: OrgId) -> StoreResult<Option<InboxBackup>>;
    /// Creates or replaces the organization's backup configuration; a replaced one keeps its
    /// `created_at` and its runs.
    async fn put_inbox_backup(&self, backup: &InboxBackup) -> StoreResult<()>;
    /// Removes the configuration and its runs' history.
    async fn delete_inbox_backup(&self, org: OrgId) -> StoreResult<bool>;
    /// Every organization's configuration in id order, after `after`: for the scheduler.
    async fn list_inbox_backups(
        &self,
        after: Option<OrgId>,
        limit: i64,
    ) -> StoreResult<Vec<InboxBackup>>;
    /// Claims the organization's day for one attempt, in one atomic statement: the run as it now
    /// stands, or `None` when another attempt holds it (a lease in force) or, for the schedule,
    /// when the day is backed up whole already or its retry is not due.
    async fn claim_inbox_backup_run(
        &self,
        claim: &BackupClaim,
    ) -> StoreResult<Option<InboxBackupRun>>;
    /// Extends the claim; false when `owner` no longer holds it.
    async fn renew_inbox_backup_run(
        &self,
        org: OrgId,
        day: &str,
        owner: &str,
        lease_until: i64,
    ) -> StoreResult<bool>;
    /// Records how the attempt `owner` holds ended and lets go of it; false (nothing written)
    /// when the claim was lost meanwhile.
    async fn finish_inbox_backup_run(
        &self,
        org: OrgId,
        day: &str,
        owner: &str,
        outcome: &BackupRunOutcome,
    ) -> StoreResult<bool>;
    /// The organization's runs from `since_day` on, newest day first.
    async fn list_inbox_backup_runs(
        &self,
        org: OrgId,
        since_day: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<InboxBackupRun>>;
    /// The run with the latest success and the one with the latest failure.
    async fn latest_inbox_backup_runs(
        &self,
        org: OrgId,
    ) -> StoreResult<(Option<InboxBackupRun>, Option<InboxBackupRun>)>;
    /// The organization's conversations with activity in `[from, to)` (started then, or with a
    /// message written then), with their labels, in id order after `after`; at most `limit`.
    async fn inbox_backup_conversations(
        &self,
        org: OrgId,
        from: i64,
        to: i64,
        after: Option<ConversationId>,
        limit: i64,
    ) -> StoreResult<Vec<ChatLogEntry>>;
    /// The conversation's messages written in `[from, to)`, oldest first, after `after`.
    async fn inbox_backup_messages(
        &self,
        conversation: ConversationId,
        from: i64,
        to: i64,
        after: Option<MessagePosition>,
        limit: i64,
    ) -> StoreResult<Vec<Message>>;

    // Audit.
    /// Appends to the event's chain, linking it to the previous event's hash.
    async fn append_audit(&self, event: NewAuditEvent) -> StoreResult<AuditEvent>;
    /// Newest first; `before_seq` pages backwards. At most 1000 events per call.
    async fn list_audit(
        &self,
        chain: &AuditChain,
        before_seq: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<AuditEvent>>;
    /// Recomputes every chain; an empty list means nothing was altered, removed or reordered.
    async fn verify_audit_chains(&self) -> StoreResult<Vec<ChainBreak>>;
}
