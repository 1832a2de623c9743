# The fanbench binary in a container, for docker-compose.yml. (Not exercised by the project's own
# tests: they run the binary directly against a throwaway PostgreSQL.)
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p fanbench

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/fanbench /usr/local/bin/fanbench
ENTRYPOINT ["fanbench"]
