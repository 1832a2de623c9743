//! `fanbench dlq list|replay`: the async design's dead letters.

use anyhow::{Context, Result};
use signup_core::Channel;

use crate::cli::{DlqCommand, DlqTarget};

pub async fn run(command: DlqCommand) -> Result<()> {
    match command {
        DlqCommand::List(args) => {
            let (pool, channel) = connect(&args.target).await?;
            let dead = async_server::dlq::list(&pool, channel, args.limit)
                .await
                .context("could not list dead letters")?;
            for letter in &dead {
                println!("{}", serde_json::to_string(letter)?);
            }
            eprintln!("{} dead letter(s)", dead.len());
            Ok(())
        }
        DlqCommand::Replay(args) => {
            let (pool, channel) = connect(&args.target).await?;
            let n = async_server::dlq::replay(&pool, channel, &args.ids)
                .await
                .context("could not replay")?;
            println!("replayed {n} dead letter(s); the workers deliver them now");
            Ok(())
        }
    }
}

async fn connect(target: &DlqTarget) -> Result<(sqlx::PgPool, Option<Channel>)> {
    let pool =
        fanbench_db::connect_pool(&target.database_url, 1, std::time::Duration::from_secs(10))
            .await
            .context("could not connect to the database")?;
    Ok((pool, target.channel))
}
