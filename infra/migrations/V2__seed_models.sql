-- The starting model catalog (shared/reference/models.md). Ids are fixed so
-- that sample events and clients can refer to them.
INSERT INTO models (id, name, display_name, description, replicate_id, version,
                    default_width, default_height, default_steps, default_guidance_scale,
                    min_width, min_height, max_width, max_height, max_steps,
                    supports_negative_prompt, supports_img2img, supports_seed,
                    is_default, sort_order, estimated_time_seconds)
VALUES
  ('3f1c0b6e-7a55-4c1e-9d2a-5b0c1f6a9e01', 'flux-schnell', 'FLUX Schnell',
   'Fast, high-quality text-to-image by Black Forest Labs.',
   'black-forest-labs/flux-schnell', 'c846a69991daf4c0e5d016514849d14ee5b2e6846ce6b9d6f21369e564cfe51e',
   1024, 1024, 4, 0, 256, 256, 1440, 1440, 4, false, false, true, true, 0, 3),
  ('3f1c0b6e-7a55-4c1e-9d2a-5b0c1f6a9e02', 'seedream-3', 'Seedream 3',
   'High-resolution text-to-image by ByteDance.',
   'bytedance/seedream-3', 'ed344813bc9f4996be6de4febd8b9c14c7849ad7b21ab047572e3620ee374ee7',
   2048, 2048, 1, 2.5, 512, 512, 2048, 2048, 1, false, false, true, false, 1, 5),
  ('3f1c0b6e-7a55-4c1e-9d2a-5b0c1f6a9e03', 'nano-banana', 'Nano Banana',
   'Image generation and editing by Google.',
   'google/nano-banana', 'd05a591283da31be3eea28d5634ef9e26989b351718b6489bd308426ebd0a3e8',
   1024, 1024, 1, 0, 512, 512, 2048, 2048, 1, false, true, false, false, 2, 3)
ON CONFLICT (id) DO NOTHING;
