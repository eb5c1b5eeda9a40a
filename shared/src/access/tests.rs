use super::*;
use serde_json::json;

fn identity(roles: &[Role], organ: Option<&str>, channel: Option<Channel>) -> Identity {
    Identity {
        name: "desk".into(),
        display: "desk".into(),
        roles: roles.to_vec(),
        organ_id: organ.map(|o| OrganId::parse(o).unwrap()),
        channel,
    }
}

fn staff(roles: &[Role], organ: Option<&str>) -> Caller {
    Caller::Staff(identity(roles, organ, None))
}

fn organ(id: &str) -> OrganId {
    OrganId::parse(id).unwrap()
}

fn code(r: Result<impl std::fmt::Debug, ApiError>) -> ErrorCode {
    r.unwrap_err().code
}

#[test]
fn tokens_are_known_by_their_sha256_and_bad_ones_are_refused() {
    let creds = Credentials {
        tokens: vec![TokenEntry {
            identity: identity(&[Role::Bureau], None, None),
            sha256: hex::decode(token_sha256("s3cret")).unwrap().try_into().unwrap(),
        }],
        users: vec![],
    };
    assert_eq!(creds.authenticate(None).unwrap(), Caller::Public);
    assert_eq!(creds.authenticate(Some("  ")).unwrap(), Caller::Public);
    assert!(matches!(creds.authenticate(Some("Bearer s3cret")).unwrap(), Caller::Staff(i) if i.name == "desk"));
    assert_eq!(code(creds.authenticate(Some("Bearer wrong"))), ErrorCode::Unauthorized);
    assert_eq!(code(creds.authenticate(Some("Basic czNjcmV0"))), ErrorCode::Unauthorized);
}

#[test]
fn passwords_verify_against_argon2id_and_unknown_logins_fail_alike() {
    let hash = hash_password("correct horse battery");
    assert!(hash.starts_with("$argon2id$"));
    let creds = Credentials {
        tokens: vec![],
        users: vec![UserEntry { identity: identity(&[Role::Organ], Some("320211-zjj"), None), password_hash: hash }],
    };
    assert!(creds.login("desk", "correct horse battery").is_some());
    assert!(creds.login("desk", "wrong").is_none());
    assert!(creds.login("nobody", "correct horse battery").is_none());
}

#[test]
fn submission_channels_by_role() {
    assert!(may_submit(&Caller::Public, Channel::Online).is_ok());
    assert_eq!(code(may_submit(&Caller::Public, Channel::Visit)), ErrorCode::Unauthorized);
    assert!(may_submit(&staff(&[Role::Bureau], None), Channel::Letter).is_ok());
    let hotline = Caller::Staff(identity(&[Role::Integration], None, Some(Channel::Hotline12345)));
    assert!(may_submit(&hotline, Channel::Hotline12345).is_ok());
    assert_eq!(code(may_submit(&hotline, Channel::Visit)), ErrorCode::Forbidden);
    assert_eq!(code(may_submit(&staff(&[Role::Auditor], None), Channel::Online)), ErrorCode::Forbidden);
}

#[test]
fn reading_cases_by_role_and_organ() {
    let zjj = organ("320211-zjj");
    let rsj = organ("320211-rsj");
    assert_eq!(code(may_read(&Caller::Public, "c", Some(&zjj))), ErrorCode::Unauthorized);
    assert_eq!(may_read(&staff(&[Role::Bureau], None), "c", None).unwrap(), Sight::Full);
    assert_eq!(may_read(&staff(&[Role::Organ], Some("320211-zjj")), "c", Some(&zjj)).unwrap(), Sight::Full);
    assert_eq!(code(may_read(&staff(&[Role::Organ], Some("320211-zjj")), "c", Some(&rsj))), ErrorCode::NotFound);
    assert_eq!(code(may_read(&staff(&[Role::Organ], Some("320211-zjj")), "c", None)), ErrorCode::NotFound);
    assert_eq!(may_read(&staff(&[Role::Auditor], None), "c", Some(&zjj)).unwrap(), Sight::Masked);
    assert_eq!(code(may_read(&staff(&[Role::Office], None), "c", Some(&zjj))), ErrorCode::Forbidden);
}

#[test]
fn acting_by_role_with_the_actor_on_record() {
    let zjj = organ("320211-zjj");
    let as_organ = |id: &str| Actor { kind: ActorKind::Organ, id: id.into() };
    let desk = staff(&[Role::Organ], Some("320211-zjj"));
    // an organ acts as itself, on its own cases only
    let on = may_act(&desk, "c", Some(&zjj), false, None, false).unwrap();
    assert_eq!(on, OnRecord { actor: as_organ("320211-zjj"), recorded_by: None });
    assert!(may_act(&desk, "c", Some(&zjj), false, Some(&as_organ("320211-zjj")), false).is_ok());
    assert_eq!(
        code(may_act(&desk, "c", Some(&zjj), false, Some(&as_organ("320211-rsj")), false)),
        ErrorCode::Forbidden
    );
    assert_eq!(code(may_act(&desk, "c", Some(&organ("320211-rsj")), false, None, false)), ErrorCode::NotFound);
    assert_eq!(code(may_act(&desk, "c", Some(&zjj), true, None, false)), ErrorCode::Forbidden);
    // the bureau records for others, and the record keeps both
    let bureau = staff(&[Role::Bureau], None);
    let on = may_act(&bureau, "c", Some(&zjj), false, Some(&as_organ("320211-zjj")), false).unwrap();
    assert_eq!(on.actor, as_organ("320211-zjj"));
    assert_eq!(on.recorded_by, Some(Actor { kind: ActorKind::Staff, id: "desk".into() }));
    assert_eq!(may_act(&bureau, "c", None, false, None, false).unwrap().recorded_by, None);
    // auditors read only; the public acts as the petitioner with the query code
    assert_eq!(
        code(may_act(&staff(&[Role::Auditor], None), "c", Some(&zjj), false, None, false)),
        ErrorCode::Forbidden
    );
    assert_eq!(code(may_act(&Caller::Public, "c", Some(&zjj), false, None, true)), ErrorCode::Unauthorized);
    assert_eq!(code(may_act(&Caller::Public, "c", Some(&zjj), true, None, false)), ErrorCode::NotFound);
    assert_eq!(may_act(&Caller::Public, "c", Some(&zjj), true, None, true).unwrap().actor.kind, ActorKind::Petitioner);
    assert_eq!(
        code(may_act(&Caller::Public, "c", Some(&zjj), true, Some(&as_organ("320211-zjj")), true)),
        ErrorCode::Forbidden
    );
}

#[test]
fn escalations_for_the_office() {
    assert_eq!(code(may_read_escalations(&Caller::Public)), ErrorCode::Unauthorized);
    assert_eq!(may_read_escalations(&staff(&[Role::Auditor], None)), Ok(Sight::Masked));
    assert_eq!(may_read_escalations(&staff(&[Role::Office], None)), Ok(Sight::Full));
    assert_eq!(code(may_direct(&staff(&[Role::Auditor], None))), ErrorCode::Forbidden);
    assert!(may_direct(&staff(&[Role::Office], None)).is_ok());
    assert_eq!(code(may_read_escalations(&staff(&[Role::Bureau], None))), ErrorCode::Forbidden);
}

#[test]
fn personal_data_is_masked_wherever_it_nests() {
    let mut v = json!({"events": [{"data": {"petition": {"petitioners": [
        {"name": "张三丰", "id_number": "32021119900101123X", "phone": "13812345678", "address": "滨湖区某路1号"}
    ]}, "snapshot": [{"data": {"petition": {"petitioners": [{"name": "李四", "phone": "0510-12345678"}]}}}]}}]});
    mask_personal_data(&mut v);
    let text = v.to_string();
    for secret in ["张三丰", "32021119900101123X", "13812345678", "滨湖区某路1号", "李四", "0510-12345678"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(text.contains("320*************3X") && text.contains("138****5678") && text.contains("张**"), "{text}");
}
