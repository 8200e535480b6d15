//! The users the benchmark reads: generations made in one statement each
//! (`generate_series`), newest first one minute apart, mostly completed (with
//! their image rows, thumbnails done), some failed and cancelled; the counter
//! trigger (V14) fills `generation_counts` as it would in service (one
//! transaction per user, without the pool's statement timeout).

use uuid::Uuid;

/// The statements that give `user` `n` generations: every tenth failed,
/// every twentieth-but-one cancelled, the rest completed with an image row.
pub fn user(user: Uuid, n: i64) -> String {
    format!(
        "BEGIN; SET LOCAL statement_timeout = 0;
         INSERT INTO generations (id, user_id, model_id, prompt, width, height, steps, guidance_scale,
                                  status, charge, progress, created_at, completed_at)
         SELECT gen_random_uuid(), '{user}', m.id, 'a lighthouse at dusk, number ' || i, 1024, 1024, 4, 0,
                CASE WHEN i % 10 = 0 THEN 'failed' WHEN i % 20 = 1 THEN 'cancelled' ELSE 'completed' END,
                'waived', 1, now() - i * interval '1 minute', now() - i * interval '1 minute' + interval '3 seconds'
           FROM generate_series(1, {n}) i, (SELECT id FROM models WHERE is_default) m;
         INSERT INTO images (id, generation_id, user_id, storage_key, format, file_size, width, height,
                             created_at, thumbnail_key, blurhash, thumbnail_state)
         SELECT gen_random_uuid(), g.id, g.user_id, 'users/{user}/images/' || g.id || '.webp', 'webp', 40000,
                1024, 1024, g.completed_at, 'users/{user}/images/' || g.id || '.thumb.webp',
                'LEHV6nWB2yk8pyo0adR*.7kCMdnj', 'done'
           FROM generations g WHERE g.user_id = '{user}' AND g.status = 'completed';
         COMMIT; ANALYZE generations; ANALYZE images; ANALYZE generation_counts;"
    )
}
