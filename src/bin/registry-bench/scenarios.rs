//! The runs that fill the report's rows: the main server's rows, the same on PostgreSQL, GetProfile
//! on a small and a large store, and etcd's Range and Put.
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use futures::{StreamExt, TryStreamExt};
use profile_registry::pb;
use serde_json::json;

use crate::args::{Args, CONCURRENCY};
use crate::clients::{target_args, Clients};
use crate::dataset::{page_tokens, update_bases, warm_up};
use crate::etcd;
use crate::load::{self, measure, pick, Sample};
use crate::procs::{self, channels, Etcd, Server};
use crate::report::{self, Report};
use crate::rows::server_calls;
use crate::transfer::{self, profile_name, FIXTURE};

/// Measures every row of the main server at each concurrency.
pub async fn server_rows(
    report: &mut Report,
    clients: &Clients,
    args: &Args,
    conversations: &[String],
    server: Option<u32>,
) -> anyhow::Result<()> {
    let ids = Arc::new(conversations.to_vec());
    warm_up(clients, args.profiles).await?;
    let bases = Arc::new(update_bases(clients, args).await?);
    let pages = Arc::new(page_tokens(clients).await?);
    let rows = server_calls(clients, args, ids, bases, pages);
    for c in CONCURRENCY {
        for (name, row) in &rows {
            if report.wants(name) {
                let row = Arc::clone(row);
                let before = (load::cpu_us(server)?, load::cpu_us(None)?);
                let s = measure(c, args.duration, move |w, n| row(w, n)).await?;
                let per_call = |b: u64, a: u64| (a - b) as f64 / s.all_calls.max(1) as f64;
                match server {
                    Some(pid) => {
                        let cpu = (
                            per_call(before.0, load::cpu_us(server)?),
                            per_call(before.1, load::cpu_us(None)?),
                        );
                        let rss_kib = procs::rss_kib(pid)?;
                        report.row_probed(name, c, s, report::Probe { cpu, rss_kib });
                    }
                    None => report.row(name, c, s),
                }
            }
        }
    }
    Ok(())
}

/// GetProfile and UpdateProfile on a server running on PostgreSQL (`--store`), with the same data
/// set of profiles as the main server.
pub async fn postgres_rows(
    report: &mut Report,
    args: &Args,
    bin: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if !report.wants(report::PG_GET_PROFILE) && !report.wants(report::PG_UPDATE_PROFILE) {
        return Ok(());
    }
    let (Some(admin), Some(bin)) = (&args.store, bin) else {
        let why = "needs --store postgres://... (and a server started by the benchmark)";
        report.skip(report::PG_GET_PROFILE, why);
        report.skip(report::PG_UPDATE_PROFILE, why);
        return Ok(());
    };
    let pool = sqlx::PgPool::connect(admin)
        .await
        .context("--store: cannot connect")?;
    let db = format!("registry_bench_{}", std::process::id());
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute(&pool)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&pool)
        .await
        .context("--store: cannot CREATE DATABASE")?;
    // The same server and options (e.g. ?sslmode=require), another database.
    let (path, query) = admin.split_once('?').unwrap_or((admin, ""));
    let (base, _) = path
        .rsplit_once('/')
        .context("--store: a URL ending in /database")?;
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let url = format!("{base}/{db}{query}");
    let work = tempfile::tempdir()?;
    let key = work.path().join("keys");
    std::fs::write(&key, "bench:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n")?;
    let extra = [
        "--store".to_owned(),
        url,
        "--secret-key-file".to_owned(),
        key.display().to_string(),
    ];
    let result = async {
        let server = Server::start_with(bin, &work.path().join("data"), &extra).await?;
        transfer::import_documents(
            &target_args(&server.url),
            transfer::documents(args.profiles),
        )
        .await?;
        let clients = Clients::connect(&server.url, args.connections).await?;
        warm_up(&clients, args.profiles).await?;
        let bases = Arc::new(update_bases(&clients, args).await?);
        let pages = Arc::new(page_tokens(&clients).await?);
        let rows = server_calls(&clients, args, Arc::new(Vec::new()), bases, pages);
        for c in CONCURRENCY {
            for (name, pg_name) in [
                (report::GET_PROFILE, report::PG_GET_PROFILE),
                (report::UPDATE_PROFILE, report::PG_UPDATE_PROFILE),
            ] {
                let Some((_, row)) = rows.iter().find(|(n, _)| *n == name) else {
                    continue;
                };
                let row = Arc::clone(row);
                let s = measure(c, args.duration, move |w, n| row(w, n)).await?;
                report.row(pg_name, c, s);
            }
        }
        drop(clients);
        server.stop()
    }
    .await;
    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&pool)
        .await;
    result?;
    dropped?;
    Ok(())
}

/// GetProfile at concurrency 64 on a fresh server holding `n` profiles, and how long that
/// server took from start to SERVING on them (it is restarted after the import).
pub async fn get_profile_at(
    bin: &std::path::Path,
    n: usize,
    args: &Args,
) -> anyhow::Result<(Sample, Duration)> {
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let loaded = Server::start(bin, &data).await?;
    transfer::import_documents(&target_args(&loaded.url), transfer::documents(n)).await?;
    // Start to SERVING on that store: restart the server.
    loaded.stop()?;
    let server = Server::start(bin, &data).await?;
    let start = server.start_to_serving;
    let clients = Clients::connect(&server.url, args.connections).await?;
    let s = measure(CONCURRENCY[1], args.duration, move |w, k| {
        let mut p = clients.profiles(w);
        async move {
            p.get_profile(pb::GetProfileRequest {
                name: profile_name(pick(w, k, n)),
                reveal_secrets: false,
                resolve_connection: false,
                revision: None,
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    server.stop()?;
    Ok((s, start))
}

/// Range and Put of the profile values against a local etcd, at each concurrency.
pub async fn etcd_rows(report: &mut Report, args: &Args) -> anyhow::Result<()> {
    if !report.wants(report::ETCD_RANGE) {
        return Ok(());
    }
    let Some(bin) = Etcd::binary() else {
        report.skip(report::ETCD_RANGE, "no etcd binary on PATH");
        report.skip(report::ETCD_PUT, "no etcd binary on PATH");
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let etcd = Etcd::start(&bin, &work.path().join("etcd"))?;
    let chans = channels(&etcd.url, args.connections).await?;
    let kvs: Vec<etcd::Kv> = chans.into_iter().map(etcd::Kv::new).collect();
    kvs[0].clone().wait_ready(Duration::from_secs(30)).await?;
    let n = args.profiles;
    futures::stream::iter(0..n)
        .map(|i| {
            let mut kv = kvs[i % kvs.len()].clone();
            async move {
                kv.put(&profile_name(i), transfer::profile_text(i).as_bytes())
                    .await
            }
        })
        .buffer_unordered(64)
        .try_collect::<()>()
        .await?;
    kvs[0].clone().expect(&profile_name(n - 1)).await?;
    let kvs = Arc::new(kvs);
    let value = Arc::new(FIXTURE.as_bytes().to_vec());
    for c in CONCURRENCY {
        let k = Arc::clone(&kvs);
        let s = measure(c, args.duration, move |w, i| {
            let mut kv = k[w % k.len()].clone();
            async move {
                ensure!(kv.get(&profile_name(pick(w, i, n))).await? == 1, "no value");
                Ok(())
            }
        })
        .await?;
        report.row(report::ETCD_RANGE, c, s);
        let (k, v) = (Arc::clone(&kvs), Arc::clone(&value));
        let s = measure(c, args.duration, move |w, _| {
            let (mut kv, v) = (k[w % k.len()].clone(), Arc::clone(&v));
            async move { kv.put(&profile_name(w % n), &v).await }
        })
        .await?;
        report.row(report::ETCD_PUT, c, s);
    }
    report.figure("etcd_rss_kib", json!(etcd.rss_kib()?));
    Ok(())
}
