//! The demo organization behind `confide demo`: an owner whose password is new on every start
//! (printed once), and a bot for the sample page.

use anyhow::Context;
use confide_domain::{BotId, OrgId, SharingPolicy, UserId};
use confide_security::{password, tokens};
use confide_store::{Chatbot, Organization, Store, User};
use secrecy::SecretString;

use crate::config::Config;
use crate::server;

pub const DEMO_EMAIL: &str = "demo-owner@confide.localhost";
const DEMO_BOT: &str = "Demo bot";

pub struct Demo {
    pub email: String,
    pub password: String,
    pub bot_key: String,
}

pub async fn prepare(config: &Config) -> anyhow::Result<Demo> {
    let store = server::open_store(config).await?;
    let now = confide_web::state::now_ms();
    // 24 random bytes, URL-safe: a one-time password the policy accepts.
    let password_text = tokens::random_token(24);
    let hash = password::hash_password_blocking(SecretString::from(password_text.clone())).await?;
    let org_id = match store.get_user_by_email(DEMO_EMAIL).await? {
        Some(user) => {
            store.set_password_hash(user.id, &hash, now).await?;
            store.revoke_user_sessions(user.id, None, now).await?;
            store
                .list_user_orgs(user.id)
                .await?
                .first()
                .map(|(org, _)| org.id)
                .context("the demo owner has no organization")?
        }
        None => {
            let org = Organization {
                id: OrgId::new(),
                name: "Confide demo".to_owned(),
                created_at: now,
            };
            let owner = User {
                id: UserId::new(),
                email: DEMO_EMAIL.to_owned(),
                password_hash: hash,
                created_at: now,
                password_changed_at: now,
                last_login_at: None,
            };
            store.create_org_with_owner(&org, &owner).await?;
            org.id
        }
    };
    let bot = match store
        .list_bots(org_id)
        .await?
        .into_iter()
        .find(|b| b.name == DEMO_BOT)
    {
        Some(bot) => bot,
        None => {
            let bot = Chatbot {
                id: BotId::new(),
                org_id,
                name: DEMO_BOT.to_owned(),
                widget_key: tokens::random_token(18),
                sharing_policy: SharingPolicy::AllReaders,
                created_at: now,
                updated_at: now,
                dialogues_version: 0,
                knowledge_version: 0,
                embeddings_version: 0,
                avatar: None,
            };
            store.create_bot(&bot).await?;
            bot
        }
    };
    Ok(Demo {
        email: DEMO_EMAIL.to_owned(),
        password: password_text,
        bot_key: bot.widget_key,
    })
}
