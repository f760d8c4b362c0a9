//! The JSON bodies of the API's requests, decoded by the extractor the handlers use (axum's
//! `Json`) and taken through what follows them in the daemon, against the pools of
//! `examples/pools.yaml`:
//! - `PUT /v1/pools/{pool}/elements/{element}`: a JSON object checked by the configuration's
//!   element rules against the pool (`registry::check`), merged into the configuration
//!   (`registry::merge`) and kept in the state file (a JSON round trip);
//! - `PUT /v1/pools/{pool}/redundancy`: `RedundancyBody`, then the level (`registry::with_actives`)
//!   and the pool's roles under it;
//! - `POST …/drain`: `DrainBody`, then the drain in the pool's state machine, its deadline and
//!   a restart's rebase of it.
//!
//! Input: a selector byte (which request), 8 bytes of "now" (nanoseconds since the daemon's
//! epoch), a length byte and that many bytes of element name (the URL's), then the body.
#![no_main]

use std::{path::Path, sync::LazyLock, time::Duration};

use axum::{Json, response::IntoResponse as _};
use libfuzzer_sys::fuzz_target;
use vnfpool_daemon::{
    api::{DrainBody, RedundancyBody},
    config,
    model::{
        failover::{Admin, Event, PoolState},
        spec::{Origin, RedundancySpec, Spec},
    },
    registry::{self, Added, AddedElement, AddedPool},
};

static SPEC: LazyLock<Spec> = LazyLock::new(|| {
    config::parse(
        include_str!("../../examples/pools.yaml"),
        Path::new("examples/pools.yaml"),
    )
    .expect("examples/pools.yaml is valid")
});

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<10>() else {
        return;
    };
    let now = Duration::from_nanos(u64::from_be_bytes(head[1..9].try_into().unwrap()));
    let name_len = usize::from(head[9] % 40).min(rest.len());
    let (name, body) = rest.split_at(name_len);
    let name = String::from_utf8_lossy(name).into_owned();
    match head[0] % 3 {
        0 => element(&name, body, head[0] & 0x80 != 0),
        1 => redundancy(body),
        _ => drain(body, now),
    }
});

/// What a handler answers for a body the extractor refuses: a client error with a message.
fn refused(rejection: &axum::extract::rejection::JsonRejection) {
    assert!(rejection.status().is_client_error());
    assert!(!rejection.body_text().is_empty());
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    match Json::<T>::from_bytes(body) {
        Ok(Json(value)) => Some(value),
        Err(rejection) => {
            refused(&rejection);
            let _ = rejection.into_response();
            None
        }
    }
}

fn element(name: &str, body: &[u8], agent: bool) {
    let Some(body) = decode::<serde_json::Value>(body) else {
        return;
    };
    if !body.is_object() {
        return;
    }
    let origin = if agent { Origin::Agent } else { Origin::Operator };
    let added_element = AddedElement {
        name: name.to_owned(),
        origin,
        body,
        agent: None,
    };
    for pool in &SPEC.pools {
        let accepted = match registry::check(pool, &added_element) {
            Ok(e) => e,
            Err(why) => {
                assert!(!why.is_empty());
                continue;
            }
        };
        assert_eq!(accepted.name, name);
        assert_eq!(accepted.origin, origin);
        assert_eq!(accepted.address.is_ipv4(), pool.vip.is_ipv4());
        assert_ne!(accepted.address, pool.vip);
        assert!(pool.elements.iter().all(|e| e.address != accepted.address && e.name != name));

        let mut added = Added::default();
        added.pools.insert(
            pool.name.clone(),
            AddedPool {
                elements: vec![added_element.clone()],
                active: None,
            },
        );
        let (merged, left_out) = registry::merge(&SPEC, &added);
        assert!(left_out.is_empty(), "checked, then left out: {left_out:?}");
        let merged_pool = merged.pools.iter().find(|p| p.name == pool.name).unwrap();
        assert_eq!(merged_pool.elements.last(), Some(&accepted));
        assert_eq!(PoolState::new(merged_pool).elements().len(), pool.elements.len() + 1);

        // The state file keeps the body as JSON and reads it back.
        let saved = serde_json::to_vec(&added).expect("serializing additions");
        let restored: Added = serde_json::from_slice(&saved).expect("reading additions back");
        assert_eq!(restored, added);
    }
}

fn redundancy(body: &[u8]) {
    let Some(RedundancyBody { active }) = decode::<RedundancyBody>(body) else {
        return;
    };
    for pool in &SPEC.pools {
        let Ok(level) = registry::with_actives(pool, active) else {
            continue;
        };
        assert!(active >= 1 && active as usize <= pool.elements.len());
        match level {
            RedundancySpec::ActiveStandby { .. } => assert_eq!(active, 1),
            RedundancySpec::NPlusM { active: n, .. } => assert_eq!(n, active),
            RedundancySpec::ActiveActive => panic!("an active-active level from a request"),
        }
        let mut pool = pool.clone();
        pool.redundancy = level;
        let state = PoolState::new(&pool);
        assert_eq!(state.roles().len(), pool.elements.len());
    }
}

fn drain(body: &[u8], now: Duration) {
    let Some(DrainBody { deadline_ms }) = decode::<DrainBody>(body) else {
        return;
    };
    // The handler's conversion. The controller then clamps it to ten years (`changes::FOREVER`,
    // also for none), but the state machine saturates rather than trust that, and a state file
    // written before the clamp may hold anything: it is given the value unclamped (none:
    // `Duration::MAX`).
    let deadline = deadline_ms.map(Duration::from_millis);
    for pool in &SPEC.pools {
        let mut state = PoolState::new(pool);
        let element = deadline_ms.unwrap_or(0) as usize % pool.elements.len();
        let event = match deadline {
            Some(deadline) => Event::Drain { element, deadline },
            None => Event::Drain {
                element,
                deadline: Duration::MAX,
            },
        };
        state.step(pool, event, now).expect("a drain of an element of the pool");
        let Admin::Draining { until } = state.elements()[element].admin() else {
            panic!("not draining after a drain");
        };
        assert!(until >= now);
        assert!(state.next_deadline().is_none_or(|next| next <= until));
        // A restart moves the deadline to the new epoch.
        let mut restored = state.clone();
        restored.rebase(now, Duration::from_secs(1));
        state.step(pool, Event::Tick, now.saturating_add(Duration::from_secs(1))).unwrap();
        state.step(pool, Event::Undrain { element }, now.saturating_add(Duration::from_secs(2))).unwrap();
        state.step(pool, Event::Tick, until).unwrap();
    }
}
