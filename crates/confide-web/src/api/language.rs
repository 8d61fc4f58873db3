//! Language fields the bot settings and dialogue APIs share: language codes, maps keyed by them,
//! their OpenAPI schemas and their checks.

use axum::http::StatusCode;
use confide_domain::language;
use utoipa::openapi::schema::{
    Array, ArrayBuilder, Object, ObjectBuilder, Schema, SchemaType, Type,
};

use crate::error::ApiError;

/// A bot language code: two or three lowercase letters (ISO 639-1 or 639-3).
pub const CODE_PATTERN: &str = "^[a-z]{2,3}$";

fn code_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(CODE_PATTERN))
        .build()
}

fn nullable(kind: Type, null: bool) -> SchemaType {
    if null {
        SchemaType::from_iter([kind, Type::Null])
    } else {
        SchemaType::new(kind)
    }
}

/// A list of distinct language codes, 1 to [`language::MAX_LANGUAGES`].
pub fn codes_schema(null: bool) -> Array {
    ArrayBuilder::new()
        .schema_type(nullable(Type::Array, null))
        .items(code_schema())
        .min_items(Some(1))
        .max_items(Some(language::MAX_LANGUAGES))
        .unique_items(true)
        .build()
}

/// An object from language code to `value`, with at most `max` entries.
pub fn by_language_schema(value: impl Into<Schema>, max: usize, null: bool) -> Object {
    ObjectBuilder::new()
        .schema_type(nullable(Type::Object, null))
        .property_names(Some(code_schema()))
        .additional_properties(Some(value.into()))
        .max_properties(Some(max))
        .build()
}

pub fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// Checks that `code` is one of the bot's languages.
pub fn spoken(languages: &[String], field: &str, code: &str) -> Result<(), ApiError> {
    if !language::valid_code(code) {
        return Err(invalid(
            "invalid_language",
            format!("{field}: `{code}` is not a language code (two or three lowercase letters)"),
        ));
    }
    if !languages.iter().any(|l| l == code) {
        return Err(invalid(
            "unknown_language",
            format!(
                "{field}: the bot does not speak `{code}`; add it to the bot's languages first"
            ),
        ));
    }
    Ok(())
}
