//! The compute network's views on both engines, driven by the real compute commands: a paid
//! job runs through the scheduler's queries to its completion, the node's payable grows by 95%
//! of the price, a lost node's job is requeued, and a rebuild of the views (and of the ledger,
//! which holds the job settlements) equals the live tables byte for byte.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use aiforge_commands::compute::{Compute, NodeMetrics, Report};
use aiforge_commands::testing::TestDatabase;
use aiforge_commands::{CommandMeta, Database, Executor, ManualClock};
use aiforge_domain::blob::BlobPurpose;
use aiforge_domain::fees::PaymentType;
use aiforge_domain::job::{JobNeeds, JobSpec, JobType, RequeueReason};
use aiforge_domain::ledger::Beneficiary;
use aiforge_domain::node::{Gpu, OfflineReason, Resources};
use aiforge_domain::payment::{
    ChainObservation, ObservedTransfer, Payment, PaymentCommand, PaymentServices,
};
use aiforge_domain::wallet::Network;
use aiforge_domain::Usdt;
use aiforge_projections::compute::{
    find_blob, find_job, find_node, held_by, jobs_on_lost_nodes, online_node_ids, online_nodes,
    pending_jobs,
};
use aiforge_projections::{view_digest, Projector};
use time::macros::datetime;

const PAYER: &str = "u-payer";
const WALLET: &str = "0x90f8bf6a479f320ead074411a4b0e7944ea8c9c1";

fn meta() -> CommandMeta {
    CommandMeta::generated(Some("test".into()))
}

fn resources(gpus: usize) -> Resources {
    Resources {
        cpu_cores: 4,
        memory_mb: 8192,
        disk_gb: 100,
        gpus: vec![
            Gpu {
                model: "RTX 4090".into(),
                memory_mb: 24_576,
            };
            gpus
        ],
        max_concurrent_jobs: 2,
    }
}

fn spec(gpus: u32, price: &str) -> JobSpec {
    JobSpec {
        job_type: JobType::Custom,
        image: "localhost/aiforge-job:busybox".into(),
        command: vec!["true".into()],
        env: BTreeMap::new(),
        inputs: vec![],
        needs: JobNeeds {
            cpu_cores: 1,
            memory_mb: 256,
            gpus,
            gpu_memory_mb: 0,
        },
        max_runtime_secs: 600,
        network: false,
        price: Usdt::parse(price).unwrap(),
    }
}

/// A confirmed job payment for a fresh job id: (job id, payment id).
async fn paid(db: &Database, clock: Arc<ManualClock>, micros: u64) -> (String, String) {
    let payments = Executor::<Payment>::new(db.clone(), clock.clone(), PaymentServices::genesis());
    let job_id = uuid::Uuid::new_v4().to_string();
    let payment_id = uuid::Uuid::now_v7().to_string();
    let at = aiforge_commands::Clock::now(clock.as_ref());
    payments
        .execute(
            &payment_id,
            PaymentCommand::Create {
                payment_id: payment_id.clone(),
                payer: PAYER.into(),
                payment_type: PaymentType::Job,
                network: Network::Ethereum,
                amount: Usdt::from_micros(i64::try_from(micros).unwrap()).unwrap(),
                reference: job_id.clone(),
                pay_to: "0x0000000000000000000000000000000000000001".into(),
                beneficiary: Beneficiary::JobEscrow {
                    job_id: job_id.clone(),
                },
                at,
            },
            &meta(),
            &[],
        )
        .await
        .unwrap();
    payments
        .execute(
            &payment_id,
            PaymentCommand::Verify {
                network: Network::Ethereum,
                tx_hash: format!("0x{}", uuid::Uuid::new_v4().simple().to_string().repeat(2)),
                observation: ChainObservation::Succeeded {
                    block: 10,
                    confirmations: 3,
                    transfers: vec![ObservedTransfer {
                        from: WALLET.into(),
                        value_micros: u128::from(micros),
                    }],
                },
                required_confirmations: 3,
                payer_wallets: vec![WALLET.into()],
                at,
            },
            &meta(),
            &[],
        )
        .await
        .unwrap();
    (job_id, payment_id)
}

async fn caught_up(projector: &Projector, db: &Database) {
    let head = db.log_head().await.unwrap();
    for projection in projector.projections() {
        projector.catch_up(projection.as_ref()).await.unwrap();
    }
    assert!(db.log_head().await.unwrap() >= head);
}

async fn balance(db: &Database, account: &str) -> i64 {
    aiforge_projections::payments::balances(db)
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.account == account)
        .map_or(0, |b| b.balance_micros)
}

async fn a_paid_job_is_scheduled_run_settled_and_rebuilt_identically(db: Database) {
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-21 10:00 UTC)));
    let compute = Compute::new(db.clone(), clock.clone());
    let projector = Projector::new(db.clone(), aiforge_projections::all());
    let cpu = compute
        .register("miner", "cpu", WALLET, resources(0), &meta())
        .await
        .unwrap();
    let gpu = compute
        .register("miner", "gpu", WALLET, resources(1), &meta())
        .await
        .unwrap();
    let (cpu_token, gpu_token) = (cpu.token.unwrap(), gpu.token.unwrap());
    compute
        .heartbeat(&cpu.node_id, &cpu_token, NodeMetrics::default())
        .await
        .unwrap();
    compute
        .heartbeat(&gpu.node_id, &gpu_token, NodeMetrics::default())
        .await
        .unwrap();
    let (cpu_job, cpu_payment) = paid(&db, clock.clone(), 10_000_000).await;
    let (gpu_job, gpu_payment) = paid(&db, clock.clone(), 20_000_000).await;
    compute
        .submit(PAYER, &cpu_payment, spec(0, "10"), &meta())
        .await
        .unwrap();
    clock.advance(time::Duration::seconds(1));
    compute
        .submit(PAYER, &gpu_payment, spec(1, "20"), &meta())
        .await
        .unwrap();
    caught_up(&projector, &db).await;

    // The scheduler's inputs, read from the views.
    let pending = pending_jobs(&db, 100).await.unwrap();
    let order: Vec<&str> = pending.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(order, [cpu_job.as_str(), gpu_job.as_str()], "oldest first");
    let nodes = online_nodes(&db).await.unwrap();
    assert_eq!(nodes.len(), 2);
    let assignments = aiforge_domain::scheduler::schedule(&pending, &nodes);
    for a in &assignments {
        assert!(compute.assign(&a.job_id, &a.node_id).await.unwrap());
        assert!(
            !compute.assign(&a.job_id, &a.node_id).await.unwrap(),
            "a job is assigned once"
        );
    }
    caught_up(&projector, &db).await;
    let assigned_to = |node_id: String| {
        let db = db.clone();
        async move {
            let held = held_by(&db, &node_id).await.unwrap();
            held.into_iter()
                .filter(|job| job.status == "assigned")
                .collect::<Vec<_>>()
        }
    };
    let on_cpu = assigned_to(cpu.node_id.clone()).await;
    let on_gpu = assigned_to(gpu.node_id.clone()).await;
    assert_eq!(on_cpu.len(), 1);
    assert_eq!(on_cpu[0].job_id, cpu_job);
    assert_eq!(on_gpu[0].job_id, gpu_job);
    let load = online_nodes(&db).await.unwrap();
    assert!(load.iter().all(|n| n.load.jobs == 1), "{load:?}");

    // The CPU job completes: 95% to the node.
    compute
        .report(&cpu.node_id, &cpu_job, 1, Report::Started, &meta())
        .await
        .unwrap();
    compute
        .report(
            &cpu.node_id,
            &cpu_job,
            1,
            Report::Exited {
                exit_code: 0,
                outputs: vec![],
            },
            &meta(),
        )
        .await
        .unwrap();
    // The GPU node is lost: its job goes back to pending.
    compute
        .mark_offline(&gpu.node_id, OfflineReason::Shutdown)
        .await
        .unwrap();
    caught_up(&projector, &db).await;
    assert_eq!(
        online_node_ids(&db).await.unwrap(),
        vec![cpu.node_id.clone()]
    );
    let lost = jobs_on_lost_nodes(&db).await.unwrap();
    assert_eq!(
        lost,
        [(
            gpu_job.clone(),
            gpu.node_id.clone(),
            1,
            "offline".to_string()
        )]
    );
    assert!(compute
        .requeue(&gpu_job, &gpu.node_id, 1, RequeueReason::NodeLost)
        .await
        .unwrap());
    caught_up(&projector, &db).await;

    let job = find_job(&db, &cpu_job).await.unwrap().unwrap();
    assert_eq!(
        (job.status.as_str(), job.node_net.as_deref()),
        ("completed", Some("9.500000"))
    );
    let job = find_job(&db, &gpu_job).await.unwrap().unwrap();
    assert_eq!((job.status.as_str(), job.node_id), ("pending", None));
    let node = find_node(&db, &gpu.node_id).await.unwrap().unwrap();
    assert_eq!(
        (node.status.as_str(), node.offline_reason.as_deref()),
        ("offline", Some("shutdown"))
    );
    assert_eq!(
        balance(&db, &format!("node_payable:{}", cpu.node_id)).await,
        9_500_000
    );
    assert_eq!(balance(&db, "platform_fees:platform").await, 500_000);
    assert_eq!(
        aiforge_projections::compute::node_earnings(&db, &cpu.node_id)
            .await
            .unwrap(),
        aiforge_projections::compute::NodeEarnings {
            payable_micros: 9_500_000,
            jobs_paid: 1,
            jobs_micros: 9_500_000,
            inference_micros: 0,
        }
    );
    assert_eq!(
        aiforge_projections::compute::node_earnings(&db, &gpu.node_id)
            .await
            .unwrap(),
        aiforge_projections::compute::NodeEarnings::default(),
        "its job was handed back, unpaid"
    );
    assert_eq!(balance(&db, &format!("job_escrow:{cpu_job}")).await, 0);
    assert_eq!(
        balance(&db, &format!("job_escrow:{gpu_job}")).await,
        20_000_000
    );
    let postings =
        aiforge_projections::payments::postings_of(&db, &format!("node_payable:{}", cpu.node_id))
            .await
            .unwrap();
    assert_eq!(
        postings[0].payment_id, cpu_payment,
        "settlements name the job's payment"
    );

    // Job files: stored once per content, found by CID (an input and an output here).
    let input = aiforge_commands::blob::StoredBlob {
        sha256: "a".repeat(64),
        cid: aiforge_domain::cid::cid_v0(b"input"),
        size_bytes: 5,
    };
    let output = aiforge_commands::blob::StoredBlob {
        sha256: "b".repeat(64),
        cid: aiforge_domain::cid::cid_v0(b"output"),
        size_bytes: 6,
    };
    compute
        .record_blob(&input, "local", PAYER, BlobPurpose::JobInput, &meta())
        .await
        .unwrap();
    let events = db.count_events().await.unwrap();
    compute
        .record_blob(&input, "local", PAYER, BlobPurpose::JobInput, &meta())
        .await
        .unwrap();
    assert_eq!(
        db.count_events().await.unwrap(),
        events,
        "the same content again, by its holder, writes nothing"
    );
    // Another uploader of the same bytes holds them too (one `BlobHeld`), once.
    for _ in 0..2 {
        compute
            .record_blob(&input, "local", "u-other", BlobPurpose::JobInput, &meta())
            .await
            .unwrap();
    }
    assert_eq!(
        db.count_events().await.unwrap(),
        events + 1,
        "another uploader is recorded once as a holder"
    );
    let from_node = format!("node:{}", cpu.node_id);
    let written = BlobPurpose::JobOutput {
        job_id: cpu_job.clone(),
        attempt: 1,
    };
    compute
        .record_blob(&output, "local", &from_node, written, &meta())
        .await
        .unwrap();
    caught_up(&projector, &db).await;
    let found = find_blob(&db, &input.cid).await.unwrap().unwrap();
    assert_eq!(
        (
            found.sha256.as_str(),
            found.size_bytes,
            found.stored_by.as_str(),
            found.purpose.as_str()
        ),
        (input.sha256.as_str(), 5, PAYER, "job_input")
    );
    let found = find_blob(&db, &output.cid).await.unwrap().unwrap();
    assert_eq!(
        (found.purpose.as_str(), found.job_id.as_deref()),
        ("job_output", Some(cpu_job.as_str()))
    );
    assert!(find_blob(&db, &aiforge_domain::cid::cid_v0(b"never"))
        .await
        .unwrap()
        .is_none());

    // Rebuilt from the log, the compute and ledger views equal the live ones.
    for name in ["compute", "payments"] {
        let projection = projector.find(name).unwrap();
        let mut live = Vec::new();
        for table in projection.tables() {
            live.push(view_digest(&db, table).await.unwrap());
        }
        projector.rebuild(projection.as_ref()).await.unwrap();
        let mut rebuilt = Vec::new();
        for table in projection.tables() {
            rebuilt.push(view_digest(&db, table).await.unwrap());
        }
        assert_eq!(live, rebuilt, "{name}");
    }
}

macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let test_db = TestDatabase::sqlite().await.unwrap();
                    super::$name(test_db.db.clone()).await;
                    test_db.cleanup().await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(test_db) = TestDatabase::postgres().await else { return };
                    super::$name(test_db.db.clone()).await;
                    test_db.cleanup().await;
                }
            )*
        }
    };
}

on_both_engines!(a_paid_job_is_scheduled_run_settled_and_rebuilt_identically);
