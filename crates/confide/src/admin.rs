//! Operator commands. Passwords come from standard input, never from argv; every change is audited
//! with the actor `cli`.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{Context, bail};
use confide_domain::{Email, Name, OrgId, OrgRole, UserId};
use confide_security::{JwtKeys, password};
use confide_store::{AuditChain, Membership, NewAuditEvent, Organization, SqlStore, Store, User};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::cli::{AdminCommand, AuditCommand, CreateOwner, ImportUser};
use crate::config::Config;
use crate::server;

fn now_ms() -> i64 {
    confide_web::state::now_ms()
}

async fn audit(
    store: &SqlStore,
    chain: AuditChain,
    action: &str,
    target: Option<String>,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    store
        .append_audit(NewAuditEvent {
            chain,
            at: now_ms(),
            actor: Some("cli".to_owned()),
            ip: None,
            action: action.to_owned(),
            target,
            details,
        })
        .await?;
    Ok(())
}

pub async fn run(config: &Config, command: AdminCommand) -> anyhow::Result<ExitCode> {
    let store = server::open_store(config).await?;
    match command {
        AdminCommand::CreateOwner(args) => create_owner(&store, args).await,
        AdminCommand::ImportUser(args) => import_user(&store, args).await,
        AdminCommand::UnlockUser { email } => {
            let email = Email::parse(&email)?;
            store
                .clear_lockout(&format!("email:{email}"), Some(email.as_str()))
                .await?;
            let user = store.get_user_by_email(email.as_str()).await?;
            audit_for_user(
                &store,
                user.as_ref().map(|u| u.id),
                "auth.unlocked",
                json!({ "email": email.as_str() }),
            )
            .await?;
            println!("{}", json!({ "unlocked": email.as_str() }));
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::RevokeSessions { email } => {
            let email = Email::parse(&email)?;
            let user = store
                .get_user_by_email(email.as_str())
                .await?
                .context("no user with that email")?;
            let revoked = store.revoke_user_sessions(user.id, None, now_ms()).await?;
            audit_for_user(
                &store,
                Some(user.id),
                "session.revoked_all",
                json!({ "count": revoked }),
            )
            .await?;
            println!("{}", json!({ "user_id": user.id, "revoked": revoked }));
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::RotateSigningKey => {
            server::prepare_data_dir(&config.data_dir)?;
            JwtKeys::load_or_generate(&config.data_dir)?;
            let kid = JwtKeys::rotate(&config.data_dir, now_ms() / 1000)?;
            audit(
                &store,
                AuditChain::Platform,
                "signing_key.rotated",
                Some(format!("kid:{kid}")),
                json!({}),
            )
            .await?;
            println!("{}", json!({ "active_kid": kid }));
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::RealtimeCredentials => {
            server::prepare_data_dir(&config.data_dir)?;
            let keys =
                confide_security::KeyMaterial::load_or_generate(&config.data_dir, &config.keys)?;
            let (app_id, key, secret) =
                confide_web::realtime::RealtimeKeys::new(keys.realtime_key.expose_secret())
                    .platform();
            audit(
                &store,
                AuditChain::Platform,
                "realtime.credentials_read",
                None,
                json!({}),
            )
            .await?;
            println!(
                "{}",
                json!({ "app_id": app_id, "key": key, "secret": secret.expose_secret() })
            );
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::Audit(AuditCommand::Verify) => {
            let breaks = store.verify_audit_chains().await?;
            if breaks.is_empty() {
                println!("{}", json!({ "ok": true }));
                Ok(ExitCode::SUCCESS)
            } else {
                let report: Vec<_> = breaks
                    .iter()
                    .map(|b| json!({ "chain": b.chain, "seq": b.seq, "reason": b.reason }))
                    .collect();
                println!("{}", json!({ "ok": false, "breaks": report }));
                Ok(ExitCode::from(2))
            }
        }
    }
}

async fn audit_for_user(
    store: &SqlStore,
    user: Option<UserId>,
    action: &str,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    let mut chains = Vec::new();
    if let Some(user) = user {
        for (org, _) in store.list_user_orgs(user).await? {
            chains.push(AuditChain::Org(org.id));
        }
    }
    if chains.is_empty() {
        chains.push(AuditChain::Platform);
    }
    for chain in chains {
        audit(
            store,
            chain,
            action,
            user.map(|u| format!("user:{u}")),
            details.clone(),
        )
        .await?;
    }
    Ok(())
}

/// One line from standard input, without its line ending.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

async fn create_owner(store: &SqlStore, args: CreateOwner) -> anyhow::Result<ExitCode> {
    let email = Email::parse(&args.email)?;
    let org_name = Name::parse("org", &args.org)?;
    let password_text = read_password()?;
    if let Err(violation) = password::check_policy(&password_text) {
        bail!("{violation}");
    }
    let hash = password::hash_password_blocking(SecretString::from(password_text)).await?;
    let now = now_ms();
    let org = Organization {
        id: OrgId::new(),
        name: org_name.into_inner(),
        created_at: now,
    };
    let user = User {
        id: UserId::new(),
        email: email.as_str().to_owned(),
        password_hash: hash,
        created_at: now,
        password_changed_at: now,
        last_login_at: None,
    };
    store
        .create_org_with_owner(&org, &user)
        .await
        .context("creating the organization (is the email already registered?)")?;
    audit(
        store,
        AuditChain::Org(org.id),
        "org.created",
        Some(format!("user:{}", user.id)),
        json!({ "owner": email.as_str() }),
    )
    .await?;
    println!("{}", json!({ "user_id": user.id, "org_id": org.id }));
    Ok(ExitCode::SUCCESS)
}

async fn import_user(store: &SqlStore, args: ImportUser) -> anyhow::Result<ExitCode> {
    let email = Email::parse(&args.email)?;
    let org_id: OrgId = args
        .org
        .parse()
        .context("--org must be an organization id")?;
    let role = OrgRole::parse(&args.role).context("--role must be owner, admin or member")?;
    password::validate_imported_hash(&args.password_hash)?;
    store
        .get_org(org_id)
        .await?
        .context("no such organization")?;
    let now = now_ms();
    let user = User {
        id: UserId::new(),
        email: email.as_str().to_owned(),
        password_hash: args.password_hash,
        created_at: now,
        password_changed_at: now,
        last_login_at: None,
    };
    store
        .create_user(&user)
        .await
        .context("creating the user (is the email already registered?)")?;
    store
        .add_member(&Membership {
            org_id,
            user_id: user.id,
            role,
            created_at: now,
        })
        .await?;
    audit(
        store,
        AuditChain::Org(org_id),
        "user.imported",
        Some(format!("user:{}", user.id)),
        json!({ "role": role }),
    )
    .await?;
    println!("{}", json!({ "user_id": user.id, "org_id": org_id }));
    Ok(ExitCode::SUCCESS)
}
