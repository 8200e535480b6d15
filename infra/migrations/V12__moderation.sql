-- Prompt moderation: the blocklist as data. A term is one or more words,
-- matched on word boundaries after normalisation (moderation::normalize:
-- case folded, accents stripped, digits read as the letters they stand for).
-- `always`: refused whatever the settings (MODERATION_BLOCKLIST=off turns
-- the others off). Categories are OpenAI's moderation categories.
CREATE TABLE moderation_terms (
    term     text PRIMARY KEY CHECK (term = lower(term) AND term <> ''),
    category text NOT NULL,
    always   boolean NOT NULL DEFAULT false
);

INSERT INTO moderation_terms (term, category, always) VALUES
  ('child porn', 'sexual/minors', true),
  ('child pornography', 'sexual/minors', true),
  ('cp porn', 'sexual/minors', true),
  ('loli', 'sexual/minors', true),
  ('lolicon', 'sexual/minors', true),
  ('shota', 'sexual/minors', true),
  ('shotacon', 'sexual/minors', true),
  ('underage nude', 'sexual/minors', true),
  ('underage sex', 'sexual/minors', true),
  ('naked child', 'sexual/minors', true),
  ('nude child', 'sexual/minors', true),
  ('naked kid', 'sexual/minors', true),
  ('nude kid', 'sexual/minors', true),
  ('porn', 'sexual', false),
  ('porno', 'sexual', false),
  ('pornographic', 'sexual', false),
  ('hentai', 'sexual', false),
  ('nsfw', 'sexual', false),
  ('gore', 'violence/graphic', false),
  ('beheading', 'violence/graphic', false),
  ('dismembered', 'violence/graphic', false),
  ('swastika', 'hate', false)
ON CONFLICT (term) DO NOTHING;

-- How many requests of a user were refused for their content.
ALTER TABLE user_quotas ADD COLUMN content_refused integer NOT NULL DEFAULT 0;
