{#-
  Live (or paper) run against the backtest of the same strategy, query and bars, order by order.

  Parameters (relation names, so the same matching serves the ledger view and in-memory tables):
    runs, orders, fills, executions   the ledger's runs, run_orders, run_fills, run_executions (or the same
                                      columns under other names)
    pairs   a relation (live_run_id, backtest_run_id), or none: every live/paper run with its latest
            attribution run (kind 'attribution', parent_run_id = the live run)
    marks   a relation (live_run_id, symbol, mark): the last close of each symbol over the run's bars, or none
            (then the effects that need a mark are NULL where they are not zero whatever the mark)

  Matching: two orders are the same signal when they were decided on the same bar (ts_submitted: the close of
  the bar the order was decided on) for the same symbol, signed quantity and order type; the k-th such order
  of the live run (in order_id order) is matched with the k-th of the backtest. Order numbers may differ
  (they shift after the first order only one run decided).

  Per order, with q the signed filled quantity, p the average fill price (sum |q_f| p_f / sum |q_f| over the
  order's fills), m the multiplier, c the commissions, M the mark, L live and B backtest:
    slippage         = (p_L - p_B) * q_B * m   currency; > 0: live paid more / received less
    price_effect     = -slippage               when both filled, else 0
    quantity_effect  = (q_L - q_B) * (M - p_L) * m   (partial or missing fills; 0 when q_L = q_B;
                       q_L (M - p_L) m when only live filled, -q_B (M - p_B) m when only the backtest did)
    commission_effect= -(c_L - c_B)
    signal_effect    = q_L (M - p_L) m - c_L for an order only live decided, -(q_B (M - p_B) m - c_B) for one
                       only the backtest decided (all of such an order's P&L, its commission included)
    pnl_gap          = the sum of the four effects = the order's share of live P&L minus backtest P&L
  Latency (live orders with executions): bar close -> sent (sent_at - decided_ts), sent -> last execution
  (filled_at - sent_at), in milliseconds.
-#}
WITH pairs AS (
{%- if pairs %}
    SELECT live_run_id, backtest_run_id FROM {{ pairs }}
{%- else %}
    SELECT a.parent_run_id AS live_run_id, arg_max(a.run_id, (a.created_at, a.run_id)) AS backtest_run_id
    FROM {{ runs }} AS a
    JOIN {{ runs }} AS l ON l.run_id = a.parent_run_id AND l.kind IN ('live', 'paper')
    WHERE a.kind = 'attribution'
    GROUP BY a.parent_run_id
{%- endif %}
),
sides AS (
    SELECT p.live_run_id, p.backtest_run_id, o.run_id = p.live_run_id AS is_live, o.run_id, o.order_id,
           o.ts_submitted AS decided_ts, o.symbol, o.quantity, o.order_type, o.origin, o.status,
           row_number() OVER (PARTITION BY p.live_run_id, o.run_id, o.ts_submitted, o.symbol, o.quantity,
                                           o.order_type ORDER BY o.order_id) AS k
    FROM pairs AS p
    JOIN {{ orders }} AS o ON o.run_id = p.live_run_id OR o.run_id = p.backtest_run_id
    -- a live roll's legs are orders (sent to the broker); a backtest's are fills without one: both are rolls
    WHERE coalesce(o.origin, '') NOT IN ('roll_out', 'roll_in')
),
order_fills AS (
    SELECT run_id, order_id, CAST(sum(quantity) AS BIGINT) AS filled,
           sum(abs(quantity) * price) / nullif(sum(abs(quantity)), 0) AS price,
           sum(commission) AS commission, max(multiplier) AS multiplier
    FROM {{ fills }}
    WHERE order_id IS NOT NULL
    GROUP BY run_id, order_id
),
order_executions AS (
    SELECT run_id, order_id, min(sent_at) AS sent_at, max(filled_at) AS filled_at,
           sum(commission_estimate) AS commission_estimate, count(*) AS executions
    FROM {{ executions }}
    GROUP BY run_id, order_id
),
side AS (
    SELECT s.*, coalesce(f.filled, 0) AS filled, f.price, coalesce(f.commission, 0.0) AS commission,
           f.multiplier, e.sent_at, e.filled_at, e.commission_estimate, e.executions
    FROM sides AS s
    LEFT JOIN order_fills AS f ON f.run_id = s.run_id AND f.order_id = s.order_id
    LEFT JOIN order_executions AS e ON e.run_id = s.run_id AND e.order_id = s.order_id
),
matched AS (
    SELECT coalesce(l.live_run_id, b.live_run_id) AS live_run_id,
           coalesce(l.backtest_run_id, b.backtest_run_id) AS backtest_run_id,
           CASE WHEN l.order_id IS NULL THEN 'only_backtest' WHEN b.order_id IS NULL THEN 'only_live'
                ELSE 'equal' END AS signal,
           coalesce(l.decided_ts, b.decided_ts) AS decided_ts,
           coalesce(l.symbol, b.symbol) AS symbol,
           coalesce(l.quantity, b.quantity) AS quantity,
           coalesce(l.order_type, b.order_type) AS order_type,
           coalesce(l.origin, b.origin) AS origin,
           l.order_id AS live_order_id, b.order_id AS backtest_order_id,
           l.status AS live_status, b.status AS backtest_status,
           coalesce(l.filled, 0) AS live_filled, coalesce(b.filled, 0) AS backtest_filled,
           l.price AS live_price, b.price AS backtest_price,
           coalesce(l.multiplier, b.multiplier) AS multiplier,
           coalesce(l.commission, 0.0) AS live_commission, coalesce(b.commission, 0.0) AS backtest_commission,
           l.commission_estimate, l.executions, l.sent_at, l.filled_at
    FROM (SELECT * FROM side WHERE is_live) AS l
    FULL OUTER JOIN (SELECT * FROM side WHERE NOT is_live) AS b
        ON l.live_run_id = b.live_run_id AND l.decided_ts = b.decided_ts AND l.symbol = b.symbol
       AND l.quantity = b.quantity AND l.order_type = b.order_type AND l.k = b.k
),
valued AS (
    SELECT x.*,
{%- if marks %}
           mk.mark,
{%- else %}
           CAST(NULL AS DOUBLE) AS mark,
{%- endif %}
           CASE WHEN x.live_filled <> 0 AND x.backtest_filled <> 0
                -- + 0.0: no -0 when a sell filled at the same price
                THEN (x.live_price - x.backtest_price) * x.backtest_filled * x.multiplier + 0.0
                ELSE 0.0 END AS slippage
    FROM matched AS x
{%- if marks %}
    LEFT JOIN {{ marks }} AS mk ON mk.live_run_id = x.live_run_id AND mk.symbol = x.symbol
{%- endif %}
),
effects AS (
    SELECT v.*,
           -- each side's fills valued to the end of the run: q (M - p) m (0 without a fill)
           CASE WHEN v.live_filled = 0 THEN 0.0 ELSE v.live_filled * (v.mark - v.live_price) * v.multiplier END
               AS live_value,
           CASE WHEN v.backtest_filled = 0 THEN 0.0
                ELSE v.backtest_filled * (v.mark - v.backtest_price) * v.multiplier END AS backtest_value
    FROM valued AS v
),
explained AS (
    SELECT live_run_id, backtest_run_id, decided_ts, symbol, order_type, quantity, origin, signal,
           signal = 'equal' AS signal_equal, live_order_id, backtest_order_id, live_status, backtest_status,
           live_filled, backtest_filled, live_price, backtest_price,
           CASE WHEN live_filled <> 0 AND backtest_filled <> 0 THEN live_price - backtest_price END AS price_diff,
           multiplier, slippage, live_commission, backtest_commission,
           live_commission - backtest_commission AS commission_diff, commission_estimate, executions,
           sent_at, filled_at,
           (epoch_us(sent_at) - epoch_us(decided_ts)) / 1000.0 AS send_latency_ms,
           (epoch_us(filled_at) - epoch_us(sent_at)) / 1000.0 AS fill_latency_ms,
           (epoch_us(filled_at) - epoch_us(decided_ts)) / 1000.0 AS latency_ms,
           mark,
           CASE WHEN signal = 'equal' THEN 0.0 - slippage ELSE 0.0 END AS price_effect,
           CASE WHEN signal <> 'equal' OR live_filled = backtest_filled THEN 0.0
                WHEN live_filled <> 0 AND backtest_filled <> 0
                    THEN (live_filled - backtest_filled) * (mark - live_price) * multiplier
                ELSE live_value - backtest_value END AS quantity_effect,
           CASE WHEN signal = 'equal' THEN backtest_commission - live_commission ELSE 0.0 END AS commission_effect,
           CASE WHEN signal = 'only_live' THEN live_value - live_commission
                WHEN signal = 'only_backtest' THEN backtest_commission - backtest_value
                ELSE 0.0 END AS signal_effect
    FROM effects
)
SELECT *,
       -- = (live_value - c_L) - (backtest_value - c_B), and known without a mark when q_L = q_B
       price_effect + quantity_effect + commission_effect + signal_effect AS pnl_gap
FROM explained
ORDER BY live_run_id, decided_ts, coalesce(live_order_id, backtest_order_id), backtest_order_id
