use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

const NOW: i64 = 1_800_000_000;
const BOT: &str = "wk_bot";
const CHAT: &str = "0190f3a0-0000-7000-8000-000000000001";

fn pem_of(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

struct Signer {
    encoding: EncodingKey,
    public_pem: String,
    alg: Algorithm,
}

fn es256() -> Signer {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let pkcs8 = pair.to_pkcs8v1().unwrap();
    let spki = pair.public_key().as_der().unwrap();
    Signer {
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        public_pem: pem_of("PUBLIC KEY", spki.as_ref()),
        alg: Algorithm::ES256,
    }
}

fn rs256() -> Signer {
    let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let pkcs8 = pair.as_der().unwrap();
    let private_pem = pem_of("PRIVATE KEY", pkcs8.as_ref());
    let spki = pair.public_key().as_der().unwrap();
    Signer {
        encoding: EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
        public_pem: pem_of("PUBLIC KEY", spki.as_ref()),
        alg: Algorithm::RS256,
    }
}

impl Signer {
    fn sign(&self, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(self.alg), &claims, &self.encoding).unwrap()
    }

    fn key(&self) -> IdentityPublicKey {
        IdentityPublicKey::parse_pem(&self.public_pem).unwrap()
    }
}

fn claims() -> serde_json::Value {
    json!({ "sub": "customer-42", "aud": BOT, "iat": NOW, "exp": NOW + 300 })
}

fn verify(token: &str, key: &IdentityPublicKey) -> Result<VerifiedIdentity, IdentityRefusal> {
    let trusted = [TrustedIdentityKey {
        id: "k1",
        algorithm: key.algorithm,
        pem: &key.pem,
    }];
    verify_identity_token(token, &trusted, BOT, CHAT, NOW)
}

#[test]
fn an_es256_token_from_the_customers_backend_names_the_visitor() {
    let signer = es256();
    let key = signer.key();
    assert_eq!(key.algorithm, IdentityAlgorithm::Es256);
    let verified = verify(&signer.sign(claims()), &key).unwrap();
    assert_eq!(verified.user_id, "customer-42");
    assert_eq!(verified.expires_at, NOW + 300);
}

#[test]
fn an_rs256_token_is_accepted_with_an_rsa_key() {
    let signer = rs256();
    let key = signer.key();
    assert_eq!(key.algorithm, IdentityAlgorithm::Rs256);
    assert!(verify(&signer.sign(claims()), &key).is_ok());
}

#[test]
fn a_token_signed_by_another_key_is_refused() {
    let key = es256().key();
    let token = es256().sign(claims());
    assert_eq!(verify(&token, &key), Err(IdentityRefusal::Signature));
}

#[test]
fn the_algorithm_is_the_keys_not_the_tokens() {
    // HS256 with the public key as the secret: the classic confusion attack.
    let key = rs256().key();
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(key.pem.as_bytes()),
    )
    .unwrap();
    assert_eq!(verify(&forged, &key), Err(IdentityRefusal::Algorithm));
    // An ES256 token against an RSA key finds no key.
    assert_eq!(
        verify(&es256().sign(claims()), &key),
        Err(IdentityRefusal::UnknownKey)
    );
    // alg "none".
    let none = format!(
        "{}.{}.",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"alg":"none","typ":"JWT"}"#
        ),
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            claims().to_string()
        )
    );
    assert!(verify(&none, &key).is_err());
}

#[test]
fn audience_subject_time_and_chat_are_all_checked() {
    let signer = es256();
    let key = signer.key();
    let with = |patch: serde_json::Value| {
        let mut c = claims();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        verify(&signer.sign(c), &key)
    };
    assert_eq!(
        with(json!({ "aud": "wk_other" })),
        Err(IdentityRefusal::Audience)
    );
    assert_eq!(with(json!({ "aud": null })), Err(IdentityRefusal::Audience));
    assert!(with(json!({ "aud": ["x", BOT] })).is_ok());
    assert_eq!(with(json!({ "sub": null })), Err(IdentityRefusal::Subject));
    assert_eq!(with(json!({ "sub": "  " })), Err(IdentityRefusal::Subject));
    assert_eq!(with(json!({ "sub": 42 })), Err(IdentityRefusal::Subject));
    assert_eq!(
        with(json!({ "sub": "a".repeat(256) })),
        Err(IdentityRefusal::Subject)
    );
    assert_eq!(with(json!({ "exp": null })), Err(IdentityRefusal::Expired));
    assert_eq!(
        with(json!({ "iat": NOW - 600, "exp": NOW - 61 })),
        Err(IdentityRefusal::Expired)
    );
    assert_eq!(
        with(json!({ "iat": NOW + 600, "exp": NOW + 900 })),
        Err(IdentityRefusal::NotYetValid)
    );
    assert_eq!(
        with(json!({ "nbf": NOW + 600 })),
        Err(IdentityRefusal::NotYetValid)
    );
    assert_eq!(
        with(json!({ "exp": NOW + 2 * 86_400 })),
        Err(IdentityRefusal::LifetimeTooLong)
    );
    assert_eq!(
        with(json!({ "chat_id": "another-chat" })),
        Err(IdentityRefusal::OtherChat)
    );
    assert!(with(json!({ "chat_id": CHAT })).is_ok());
}

#[test]
fn a_kid_selects_the_key_and_an_unknown_kid_is_refused() {
    let signer = es256();
    let key = signer.key();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k2".into());
    let token = jsonwebtoken::encode(&header, &claims(), &signer.encoding).unwrap();
    assert_eq!(verify(&token, &key), Err(IdentityRefusal::UnknownKey));
    header.kid = Some("k1".into());
    let token = jsonwebtoken::encode(&header, &claims(), &signer.encoding).unwrap();
    assert!(verify(&token, &key).is_ok());
}

#[test]
fn uploads_must_be_one_supported_public_key() {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let private = pem_of("PRIVATE KEY", pair.to_pkcs8v1().unwrap().as_ref());
    assert_eq!(
        IdentityPublicKey::parse_pem(&private),
        Err(PublicKeyProblem::PrivateKey)
    );
    assert_eq!(
        IdentityPublicKey::parse_pem("not a key"),
        Err(PublicKeyProblem::NotPem)
    );
    assert_eq!(
        IdentityPublicKey::parse_pem(&pem_of("CERTIFICATE", b"x")),
        Err(PublicKeyProblem::WrongBlock("CERTIFICATE".into()))
    );
    assert_eq!(
        IdentityPublicKey::parse_pem(&pem_of("PUBLIC KEY", b"garbage")),
        Err(PublicKeyProblem::Unsupported)
    );
    let two = format!("{}{}", es256().public_pem, es256().public_pem);
    assert_eq!(
        IdentityPublicKey::parse_pem(&two),
        Err(PublicKeyProblem::NotPem)
    );
    // A 1024-bit RSA key (generated elsewhere; aws-lc refuses to make one).
    let weak = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDsvQyanDPuvW146pzhWByWy3eu
l4XFF82Rs4dUBjgGPtDTKyn32EO5Egv6eg29yn3nry/LdfXzim52Wmxdb9v4qEKl
o4eLaWU/WRxjORrISKMvIJOdzO46OHuhn2AU7ZvRXkHL4M1smRj/MgtZ6XK4xcEA
OLKG11tUNdxmIpYLnQIDAQAB
-----END PUBLIC KEY-----
";
    assert_eq!(
        IdentityPublicKey::parse_pem(weak),
        Err(PublicKeyProblem::RsaSize)
    );
    // The stored form is canonical: surrounding text is dropped.
    let signer = es256();
    let padded = format!("\n\n{}\n", signer.public_pem);
    assert_eq!(
        IdentityPublicKey::parse_pem(&padded).unwrap().pem,
        signer.key().pem
    );
}
