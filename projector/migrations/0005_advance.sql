-- The checkpoints' compare-and-set of a batch, sent with the change notification and COMMIT
-- in one round trip (projector.checkpoints.commit_sql). A moved checkpoint raises PJ409,
-- which aborts the transaction: nothing after it in that round trip runs, COMMIT included.
CREATE OR REPLACE FUNCTION projector_advance(
    p_projection text, p_topics text[], p_partitions integer[], p_expected bigint[], p_next bigint[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    moved integer;
BEGIN
    UPDATE projector_checkpoints c SET next_offset = u.nxt, updated_at = now()
      FROM unnest(p_topics, p_partitions, p_expected, p_next) AS u(t, p, exp, nxt)
     WHERE c.projection = p_projection AND c.topic = u.t AND c.partition = u.p
       AND c.next_offset = u.exp;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved <> cardinality(p_topics) THEN
        RAISE EXCEPTION USING ERRCODE = 'PJ409', MESSAGE = format(
            'projection ''%s'': %s of %s checkpoints moved under us (another instance owns those '
            'partitions now); re-seeking', p_projection, cardinality(p_topics) - moved,
            cardinality(p_topics));
    END IF;
END
$$;
