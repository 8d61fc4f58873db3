//! The Statistics API: a bot's sessions, messages, fallback rate and handovers per day, in the
//! caller's time zone. Counted per UTC hour without personal data (see `crate::statistics`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::{BotId, OrgId};
use confide_store::HourlyStatistics;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Auth;
use crate::authz;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PathParams, QueryParams};
use crate::state::AppState;

/// Days one request may span.
const MAX_DAYS: i64 = 366;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatisticsQuery {
    /// First day, `YYYY-MM-DD`, in `tz`.
    #[param(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub from: String,
    /// Last day (inclusive), `YYYY-MM-DD`, in `tz`; at most 366 days after `from`.
    #[param(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub to: String,
    /// IANA time zone the days are in (default `UTC`).
    pub tz: Option<String>,
}

#[derive(Serialize, ToSchema, Default, Clone)]
pub struct DayStatistics {
    /// `YYYY-MM-DD` in the requested time zone.
    pub date: String,
    /// Conversations whose visitor wrote.
    pub sessions: i64,
    pub visitor_messages: i64,
    pub bot_messages: i64,
    pub fallbacks: i64,
    /// Fallback replies per bot reply (0 when there were none).
    pub fallback_rate: f64,
    pub handovers: i64,
}

#[derive(Serialize, ToSchema)]
pub struct BotStatistics {
    pub tz: String,
    /// Every day of the range, oldest first (days without activity are zeros).
    pub days: Vec<DayStatistics>,
    pub totals: DayStatistics,
}

fn invalid(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

fn add(day: &mut DayStatistics, hour: &HourlyStatistics) {
    day.sessions += hour.sessions;
    day.visitor_messages += hour.visitor_messages;
    day.bot_messages += hour.bot_messages;
    day.fallbacks += hour.fallbacks;
    day.handovers += hour.handovers;
}

fn with_rate(mut day: DayStatistics) -> DayStatistics {
    day.fallback_rate = if day.bot_messages > 0 {
        // Counts stay far below 2^52, so the conversion is exact.
        day.fallbacks as f64 / day.bot_messages as f64
    } else {
        0.0
    };
    day
}

/// The bot's statistics per day. Flagged bot traffic and chats without interaction are excluded.
#[utoipa::path(get, path = "/api/v1/orgs/{org_id}/bots/{bot_id}/statistics", tag = "statistics",
    params(("org_id" = OrgId, Path, description = "Organization id"), ("bot_id" = BotId, Path, description = "Bot id"), StatisticsQuery),
    security(("bearer" = []), ("session" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Per day and in total", body = BotStatistics),
        (status = 403, description = "An API key without stats:read", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 422, description = "Bad dates, range or time zone", body = ErrorBody),
    ))]
pub async fn bot_statistics(
    State(state): State<AppState>,
    auth: Auth,
    PathParams((org_id, bot_id)): PathParams<(OrgId, BotId)>,
    QueryParams(query): QueryParams<StatisticsQuery>,
) -> ApiResult<Json<BotStatistics>> {
    authz::statistics(&state, &auth, org_id, bot_id).await?;
    let tz_name = query.tz.unwrap_or_else(|| "UTC".to_owned());
    let zone = jiff::tz::TimeZone::get(&tz_name)
        .map_err(|_| invalid("invalid_timezone", "tz must be an IANA time zone"))?;
    let parse = |text: &str| {
        text.parse::<jiff::civil::Date>()
            .map_err(|_| invalid("invalid_date", "dates are YYYY-MM-DD"))
    };
    let (from, to) = (parse(&query.from)?, parse(&query.to)?);
    let span = (to - from).get_days();
    if to < from || i64::from(span) >= MAX_DAYS {
        return Err(invalid(
            "invalid_range",
            "to is on or after from, at most 366 days",
        ));
    }
    let start = |date: jiff::civil::Date| {
        date.to_zoned(zone.clone())
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|_| invalid("invalid_date", "the date does not exist in that time zone"))
    };
    let end_day = to
        .tomorrow()
        .map_err(|_| invalid("invalid_date", "dates are YYYY-MM-DD"))?;
    let hours = state
        .store
        .statistics(bot_id, start(from)?, start(end_day)?)
        .await?;
    let mut days: BTreeMap<jiff::civil::Date, DayStatistics> = BTreeMap::new();
    let mut date = from;
    while date <= to {
        days.insert(
            date,
            DayStatistics {
                date: date.to_string(),
                ..Default::default()
            },
        );
        date = match date.tomorrow() {
            Ok(next) => next,
            Err(_) => break,
        };
    }
    let mut totals = DayStatistics {
        date: format!("{from}/{to}"),
        ..Default::default()
    };
    for hour in &hours {
        let local = jiff::Timestamp::from_millisecond(hour.hour)
            .map(|t| t.to_zoned(zone.clone()).date())
            .map_err(ApiError::internal)?;
        if let Some(day) = days.get_mut(&local) {
            add(day, hour);
        }
        add(&mut totals, hour);
    }
    Ok(Json(BotStatistics {
        tz: tz_name,
        days: days.into_values().map(with_rate).collect(),
        totals: with_rate(totals),
    }))
}
