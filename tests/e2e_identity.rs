//! End-to-end: wallet sign-in with signatures made by real wallet libraries (ethers.js for
//! MetaMask's personal_sign, tronweb for TronLink's signMessageV2), wallets of an email account,
//! the admin whitelist, and groups, against the real `aiforge` binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use reqwest::Method;
use serde_json::{json, Value};
use support::*;

// Ganache's deterministic test keys: public, never used for anything real.
const KEY_A: &str = "4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d";
const KEY_B: &str = "6cbed15c793ce57650b9877cf6fa156fbef513c4e6134f022a85b1ffdd59b2a1";
const KEY_C: &str = "6370fd033278c143179d81c5526140625662b8daa446c22ee2d73db3707e620c";
const ADDRESS_A: &str = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1";

async fn auth_message(server: &Server, network: &str, address: &str) -> Value {
    let (status, body) = get(
        server,
        &format!("/api/auth/wallet/auth-message?network={network}&address={address}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn wallet_login(
    server: &Server,
    network: &str,
    address: &str,
    message: &str,
    signature: &str,
) -> (u16, Value) {
    post(
        server,
        "/api/auth/wallet/login",
        json!({"network": network, "address": address, "message": message, "signature": signature}),
        None,
    )
    .await
}

/// Gets a message for the key's wallet, signs it with the real library, signs in.
async fn sign_in(server: &Server, network: &str, key: &str) -> Option<Value> {
    let (address, _) = wallet_sign(network, key, "probe")?;
    let issued = auth_message(server, network, &address).await;
    let message = issued["message"].as_str().unwrap();
    let (_, signature) = wallet_sign(network, key, message)?;
    let (status, body) = wallet_login(server, network, &address, message, &signature).await;
    assert_eq!(status, 200, "{body}");
    Some(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metamask_and_tronlink_signatures_sign_in_and_a_new_wallet_becomes_an_account() {
    let dir = temp_dir();
    let server = Server::start(&dir, &[]);
    let Some(first) = sign_in(&server, "ethereum", KEY_A).await else {
        return;
    };
    assert_eq!(first["account_created"], true);
    assert_eq!(first["wallet"]["address"], ADDRESS_A, "EIP-55 checksummed");
    let again = sign_in(&server, "ethereum", KEY_A).await.unwrap();
    assert_eq!(again["account_created"], false);
    assert_eq!(
        again["user_id"], first["user_id"],
        "the same wallet is the same account"
    );

    // Lower-case input is accepted and answered checksummed.
    let issued = auth_message(&server, "ethereum", &ADDRESS_A.to_lowercase()).await;
    assert_eq!(issued["address"], ADDRESS_A);
    assert!(issued["message"]
        .as_str()
        .unwrap()
        .contains("wants you to sign in with your Ethereum account:\n0x90F8bf6A"));

    let tron = sign_in(&server, "tron", KEY_A).await.unwrap();
    assert_eq!(tron["account_created"], true);
    assert!(tron["wallet"]["address"].as_str().unwrap().starts_with('T'));
    assert_ne!(
        tron["user_id"], first["user_id"],
        "another network's wallet is another account"
    );

    let token = first["access_token"].as_str().unwrap();
    let (status, me) = get(&server, "/api/auth/me", Some(token)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["wallet"], format!("ethereum:{ADDRESS_A}"));
    assert_eq!(me["wallets"][0]["verified"], true);
    assert_eq!(me["email"], Value::Null);
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_expired_foreign_and_forged_sign_ins_are_refused_and_change_nothing() {
    let dir = temp_dir();
    // The app's manual clock: a message expires when the test moves the clock, never because
    // a loaded machine was slow to sign.
    let server = Server::start(
        &dir,
        &[
            ("AIFORGE_SIGN_IN_TTL_SECS", "300"),
            ("AIFORGE_MANUAL_CLOCK_START", "2026-11-21T10:00:00Z"),
        ],
    );
    let Some((address, _)) = wallet_sign("ethereum", KEY_A, "probe") else {
        return;
    };
    let (tron_address, _) = wallet_sign("tron", KEY_A, "probe").unwrap();
    let issued = auth_message(&server, "ethereum", &address).await;
    let message = issued["message"].as_str().unwrap().to_string();
    let (_, signature) = wallet_sign("ethereum", KEY_A, &message).unwrap();
    let (status, body) = wallet_login(&server, "ethereum", &address, &message, &signature).await;
    assert_eq!(status, 200, "{body}");
    let events = event_count(&server).await;

    let expect = |status: u16, code: &str, got: (u16, Value)| {
        assert_eq!(got.0, status, "{}", got.1);
        assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    };
    // The used nonce.
    expect(
        401,
        "nonce_used",
        wallet_login(&server, "ethereum", &address, &message, &signature).await,
    );

    // Another domain: a phishing site's message, validly signed by the wallet.
    let fresh = auth_message(&server, "ethereum", &address).await;
    let foreign = fresh["message"]
        .as_str()
        .unwrap()
        .replace("localhost:8080 wants", "evil.example wants");
    let (_, foreign_sig) = wallet_sign("ethereum", KEY_A, &foreign).unwrap();
    expect(
        401,
        "message_rejected",
        wallet_login(&server, "ethereum", &address, &foreign, &foreign_sig).await,
    );

    // The right message, signed by another key.
    let fresh_message = fresh["message"].as_str().unwrap();
    let (_, other_sig) = wallet_sign("ethereum", KEY_B, fresh_message).unwrap();
    expect(
        401,
        "signature_rejected",
        wallet_login(&server, "ethereum", &address, fresh_message, &other_sig).await,
    );

    // An Ethereum message presented as a Tron sign-in (same key, other network).
    let (_, eth_sig) = wallet_sign("ethereum", KEY_A, fresh_message).unwrap();
    expect(
        401,
        "message_rejected",
        wallet_login(&server, "tron", &tron_address, fresh_message, &eth_sig).await,
    );

    // Malformed input is the client's error, named.
    let truncated = &eth_sig[..eth_sig.len() - 2];
    let got = wallet_login(&server, "ethereum", &address, fresh_message, truncated).await;
    expect(422, "invalid_field", got.clone());
    assert_eq!(got.1["error"]["field"], "signature");
    let got = wallet_login(&server, "ethereum", &address, fresh_message, "0xzzzz").await;
    assert_eq!(
        (got.0, got.1["error"]["field"].as_str()),
        (422, Some("signature"))
    );
    let got = wallet_login(&server, "ethereum", "0x1234", fresh_message, &eth_sig).await;
    assert_eq!(
        (got.0, got.1["error"]["field"].as_str()),
        (422, Some("address"))
    );
    let bad_checksum = address.replace("F8bf", "f8BF");
    let (status, body) = get(
        &server,
        &format!("/api/auth/wallet/auth-message?network=ethereum&address={bad_checksum}"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("address"))
    );
    let (status, body) = get(
        &server,
        &format!("/api/auth/wallet/auth-message?network=bitcoin&address={address}"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("network"))
    );

    // Expired: the clock moves past the message's 300-second validity.
    let (status, body) = post(
        &server,
        "/api/ops/clock/advance",
        json!({ "seconds": 301 }),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    expect(
        401,
        "message_expired",
        wallet_login(&server, "ethereum", &address, fresh_message, &eth_sig).await,
    );

    assert_eq!(
        event_count(&server).await,
        events,
        "no refused sign-in appended an event"
    );
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_account_connects_and_proves_a_wallet_that_then_belongs_to_it_alone() {
    let dir = temp_dir();
    let server = Server::start(&dir, &[]);
    let Some((address, _)) = wallet_sign("ethereum", KEY_C, "probe") else {
        return;
    };
    let mut tokens = Vec::new();
    for name in ["carol", "mallory"] {
        let body = json!({"email": format!("{name}@example.com"), "username": name, "password": "long password"});
        assert_eq!(post(&server, "/api/auth/register", body, None).await.0, 201);
        let (_, session) = login(&server, &format!("{name}@example.com"), "long password").await;
        tokens.push(session["access_token"].as_str().unwrap().to_string());
    }
    let (carol, mallory) = (tokens[0].as_str(), tokens[1].as_str());
    let connect = json!({"network": "ethereum", "address": address.to_lowercase()});
    // Both may list the address; listing proves nothing and claims nothing.
    for token in [carol, mallory] {
        let (status, body) = send(
            &server,
            Method::POST,
            "/api/wallets/connect",
            connect.clone(),
            Some(token),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["wallet"]["verified"], false);
    }
    let (status, _) = send(
        &server,
        Method::POST,
        "/api/wallets/connect",
        connect.clone(),
        Some(carol),
    )
    .await;
    assert_eq!(status, 409, "connecting twice");

    // Carol proves it with the real key.
    let issued = auth_message(&server, "ethereum", &address).await;
    let message = issued["message"].as_str().unwrap();
    let (_, signature) = wallet_sign("ethereum", KEY_C, message).unwrap();
    let proof = json!({"network": "ethereum", "address": address, "message": message, "signature": signature});
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/wallets/verify",
        proof,
        Some(carol),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, mine) = get(&server, "/api/wallets/my-wallets", Some(carol)).await;
    assert_eq!(mine["wallets"][0]["address"], address.as_str());
    assert_eq!(mine["wallets"][0]["verified"], true);

    // Mallory cannot prove it: a signature by her own key is refused, and even a valid proof
    // cannot take a wallet that belongs to Carol.
    let issued = auth_message(&server, "ethereum", &address).await;
    let message = issued["message"].as_str().unwrap();
    let (_, wrong) = wallet_sign("ethereum", KEY_B, message).unwrap();
    let forged =
        json!({"network": "ethereum", "address": address, "message": message, "signature": wrong});
    assert_eq!(
        send(
            &server,
            Method::POST,
            "/api/wallets/verify",
            forged,
            Some(mallory)
        )
        .await
        .0,
        401
    );
    let (_, real) = wallet_sign("ethereum", KEY_C, message).unwrap();
    let stolen =
        json!({"network": "ethereum", "address": address, "message": message, "signature": real});
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/wallets/verify",
        stolen,
        Some(mallory),
    )
    .await;
    assert_eq!(status, 409, "{body}");

    // Signing in with the wallet now opens Carol's account.
    let session = sign_in(&server, "ethereum", KEY_C).await.unwrap();
    assert_eq!(session["account_created"], false);
    let (_, me) = get(
        &server,
        "/api/auth/me",
        Some(session["access_token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(me["username"], "carol");
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_a_whitelisted_wallet_session_and_removal_takes_effect_at_once() {
    let dir = temp_dir();
    let Some((address_a, _)) = wallet_sign("ethereum", KEY_A, "probe") else {
        return;
    };
    let (address_b, _) = wallet_sign("ethereum", KEY_B, "probe").unwrap();
    let server = Server::start(
        &dir,
        &[("AIFORGE_ADMIN_WALLETS", &address_a.to_lowercase())],
    );

    assert_eq!(
        get(&server, "/api/admin/stats", None).await.0,
        401,
        "no token"
    );
    let body = json!({"email": "eve@example.com", "username": "eve", "password": "long password"});
    assert_eq!(post(&server, "/api/auth/register", body, None).await.0, 201);
    let (_, eve) = login(&server, "eve@example.com", "long password").await;
    let eve = eve["access_token"].as_str().unwrap();
    assert_eq!(
        get(&server, "/api/admin/stats", Some(eve)).await.0,
        403,
        "email session"
    );

    let admin = sign_in(&server, "ethereum", KEY_A).await.unwrap();
    assert_eq!(admin["is_admin"], true);
    let admin = admin["access_token"].as_str().unwrap().to_string();
    let bob = sign_in(&server, "ethereum", KEY_B).await.unwrap();
    assert_eq!(bob["is_admin"], false);
    let bob = bob["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        get(&server, "/api/admin/users", Some(&bob)).await.0,
        403,
        "non-whitelisted wallet"
    );

    let (status, stats) = get(&server, "/api/admin/stats", Some(&admin)).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["users"]["total"], 3);
    assert_eq!(stats["users"]["created_by_wallet"], 2);
    assert_eq!(stats["admin_wallets"], 1);
    let (status, users) = get(&server, "/api/admin/users?page=1&per_page=2", Some(&admin)).await;
    assert_eq!(status, 200, "{users}");
    assert_eq!(
        (
            users["users"].as_array().unwrap().len(),
            users["total"].as_i64()
        ),
        (2, Some(3))
    );
    assert_eq!(
        get(&server, "/api/admin/users?per_page=100000", Some(&admin))
            .await
            .0,
        422
    );

    // The last admin cannot remove themselves.
    let me_a = json!({"network": "ethereum", "address": address_a});
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/admin/wallets/remove",
        me_a.clone(),
        Some(&admin),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("last_admin"))
    );

    let wallet_b = json!({"network": "ethereum", "address": address_b});
    let (status, added) = send(
        &server,
        Method::POST,
        "/api/admin/wallets/add",
        wallet_b.clone(),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["added"]["address"], address_b.as_str());
    assert_eq!(
        get(&server, "/api/admin/stats", Some(&bob)).await.0,
        200,
        "bob's existing session is admin now"
    );
    let (_, list) = get(&server, "/api/admin/wallets", Some(&bob)).await;
    assert_eq!(list["wallets"].as_array().unwrap().len(), 2);

    assert_eq!(
        send(
            &server,
            Method::POST,
            "/api/admin/wallets/remove",
            wallet_b,
            Some(&admin)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        get(&server, "/api/admin/stats", Some(&bob)).await.0,
        403,
        "removal takes effect on the next request"
    );
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_follow_the_permission_matrix_over_http() {
    let dir = temp_dir();
    let server = Server::start(&dir, &[]);
    let mut users = Vec::new();
    for name in ["owner", "admin", "member", "viewer", "outsider"] {
        let body = json!({"email": format!("{name}@example.com"), "username": name, "password": "long password"});
        let (_, created) = post(&server, "/api/auth/register", body, None).await;
        let (_, session) = login(&server, &format!("{name}@example.com"), "long password").await;
        users.push((
            created["user"]["id"].as_str().unwrap().to_string(),
            session["access_token"].as_str().unwrap().to_string(),
        ));
    }
    let [owner, admin, member, viewer, outsider] = [0, 1, 2, 3, 4].map(|i| users[i].clone());
    let (status, group) = send(
        &server,
        Method::POST,
        "/api/groups",
        json!({"name": "  Llama lab ", "description": "fine-tunes"}),
        Some(&owner.1),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    assert_eq!(group["group"]["name"], "Llama lab");
    let id = group["group"]["group_id"].as_str().unwrap().to_string();
    let members = format!("/api/groups/{id}/members");

    for (user, role) in [(&admin, "ADMIN"), (&member, "MEMBER"), (&viewer, "VIEWER")] {
        let (status, body) = send(
            &server,
            Method::POST,
            &members,
            json!({"user_id": user.0, "role": role}),
            Some(&owner.1),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let (_, read) = get(&server, &format!("/api/groups/{id}"), Some(&viewer.1)).await;
    assert_eq!(read["members"].as_array().unwrap().len(), 4);
    assert_eq!(
        get(&server, &format!("/api/groups/{id}"), Some(&outsider.1))
            .await
            .0,
        404,
        "outsiders do not see it"
    );

    let add_outsider = json!({"user_id": outsider.0, "role": "MEMBER"});
    assert_eq!(
        send(
            &server,
            Method::POST,
            &members,
            add_outsider.clone(),
            Some(&viewer.1)
        )
        .await
        .0,
        403,
        "a viewer cannot add members"
    );
    assert_eq!(
        send(
            &server,
            Method::POST,
            &members,
            json!({"user_id": outsider.0, "role": "ADMIN"}),
            Some(&admin.1)
        )
        .await
        .0,
        403,
        "an admin cannot grant ADMIN"
    );
    assert_eq!(
        send(
            &server,
            Method::DELETE,
            &format!("{members}/{}", owner.0),
            json!({}),
            Some(&admin.1)
        )
        .await
        .0,
        403,
        "an admin cannot remove the owner"
    );
    assert_eq!(
        send(
            &server,
            Method::POST,
            &members,
            json!({"user_id": "no-such-user", "role": "MEMBER"}),
            Some(&owner.1)
        )
        .await
        .0,
        422
    );
    assert_eq!(
        send(
            &server,
            Method::POST,
            &members,
            add_outsider,
            Some(&admin.1)
        )
        .await
        .0,
        201,
        "an admin adds a member"
    );
    let (status, body) = send(
        &server,
        Method::PUT,
        &format!("{members}/{}", viewer.0),
        json!({"role": "MEMBER"}),
        Some(&admin.1),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/api/groups/{id}/leave"),
        json!({}),
        Some(&owner.1),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("owner_cannot_leave"))
    );
    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/api/groups/{id}/transfer-ownership"),
        json!({"new_owner_id": member.0}),
        Some(&owner.1),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let roles: Vec<(String, String)> = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user_id"].as_str().unwrap().to_string(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(roles.contains(&(member.0.clone(), "OWNER".into())));
    assert!(roles.contains(&(owner.0.clone(), "ADMIN".into())));
    assert_eq!(
        roles.iter().filter(|(_, r)| r == "OWNER").count(),
        1,
        "exactly one owner"
    );
    assert_eq!(
        send(
            &server,
            Method::POST,
            &format!("/api/groups/{id}/leave"),
            json!({}),
            Some(&owner.1)
        )
        .await
        .0,
        200
    );
    let (_, mine) = get(&server, "/api/groups/my-groups", Some(&member.1)).await;
    assert_eq!(mine["groups"][0]["role"], "OWNER");
    let (_, mine) = get(&server, "/api/groups/my-groups", Some(&owner.1)).await;
    assert_eq!(mine["groups"].as_array().unwrap().len(), 0);
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/groups",
        json!({"name": "   "}),
        Some(&owner.1),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("name"))
    );
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}
