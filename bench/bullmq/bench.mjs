// The BullMQ baseline's two commands (bench/bullmq_baseline.py runs them):
//   node bench.mjs enqueue N   queue N no-op jobs on queue "bench" (one addBulk)
//   node bench.mjs work N      one worker, concurrency 1, runs the no-op until N jobs completed
//                              (N = 0: start, say ready, stop), then closes
// REDIS_URL names the server; READY_FILE (optional) is created once the worker is ready.
import { writeFileSync } from "node:fs";
import { Queue, Worker } from "bullmq";
import IORedis from "ioredis";

const [mode, countText] = process.argv.slice(2);
const count = Number(countText);
const url = new URL(process.env.REDIS_URL);
// ESM: BullMQ takes a client made here (it cannot load ioredis itself); workers need no retry limit.
const connection = new IORedis({ host: url.hostname, port: Number(url.port || 6379), maxRetriesPerRequest: null });

if (mode === "enqueue") {
  const queue = new Queue("bench", { connection });
  await queue.addBulk(Array.from({ length: count }, () => ({ name: "noop", data: {} })));
  await queue.close();
  connection.disconnect();
} else if (mode === "work") {
  let completed = 0;
  const worker = new Worker("bench", async () => null, { connection, concurrency: 1, autorun: false });
  const finish = async () => {
    await worker.close();
    process.exit(0);
  };
  worker.on("completed", () => {
    completed += 1;
    if (completed >= count) finish();
  });
  worker.on("failed", (job, error) => console.error(`job ${job?.id} failed: ${error}`));
  await worker.waitUntilReady();
  if (process.env.READY_FILE) writeFileSync(process.env.READY_FILE, "");
  if (count === 0) await finish();
  else worker.run();
} else {
  console.error("usage: node bench.mjs enqueue|work N");
  process.exit(2);
}
