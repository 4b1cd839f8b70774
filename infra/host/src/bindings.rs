//! Host bindings for the `fermyon:spin` interfaces this host implements (see `wit/`).

wasmtime::component::bindgen!({
    path: "wit",
    world: "host",
    imports: { default: async | trappable },
    with: {
        "fermyon:spin/redis.connection": crate::redis_host::RedisConnection,
    },
});
