//! `fanbench dlq list|replay`: the async or the broker design's dead letters.

use anyhow::{Context, Result};
use signup_core::Channel;

use crate::cli::{Design, DlqCommand, DlqTarget};

pub async fn run(command: DlqCommand) -> Result<()> {
    match command {
        DlqCommand::List(args) => {
            let (pool, channel) = connect(&args.target).await?;
            let dead = match args.target.design {
                Design::Broker => broker_server::dlq::list(&pool, channel, args.limit).await,
                _ => async_server::dlq::list(&pool, channel, args.limit).await,
            }
            .context("could not list dead letters")?;
            for letter in &dead {
                println!("{}", serde_json::to_string(letter)?);
            }
            eprintln!("{} dead letter(s)", dead.len());
            Ok(())
        }
        DlqCommand::Replay(args) => {
            let (pool, channel) = connect(&args.target).await?;
            let n = match args.target.design {
                Design::Broker => broker_server::dlq::replay(&pool, channel, &args.ids).await,
                _ => async_server::dlq::replay(&pool, channel, &args.ids).await,
            }
            .context("could not replay")?;
            let who = match args.target.design {
                Design::Broker => "the relay publishes them and the workers deliver them now",
                _ => "the workers deliver them now",
            };
            println!("replayed {n} dead letter(s); {who}");
            Ok(())
        }
    }
}

async fn connect(target: &DlqTarget) -> Result<(sqlx::PgPool, Option<Channel>)> {
    if target.design == Design::Sync {
        anyhow::bail!("the sync design has no dead letters: a failed send fails its sign-up");
    }
    let pool =
        fanbench_db::connect_pool(&target.database_url, 1, std::time::Duration::from_secs(10))
            .await
            .context("could not connect to the database")?;
    Ok((pool, target.channel))
}
