// joinhook-node decides joins over NATS: Phoenix's join/3 as a NATS service
// in Node with nats.js (npm install nats). Run Fabric with a namespace
// `joins: request` (here: guild), then
//   NATS_URL=nats://127.0.0.1:4222 node examples/joinhook-node/joinhook.js
// A join of guild:42 arrives on fabric_join.guild.42 as a JSON JoinRequest
// (schema/proto/fabric/v1/hooks.proto); the JoinReply admits a member with
// the guild's state as the join reply and the role as assigns (seen by push
// handlers), or refuses anyone else with a reason. Same as examples/joinhook-go.
"use strict";
const { connect, JSONCodec } = require("nats");

// guild → user → role (Maps: a topic like guild:__proto__ finds nothing)
const roles = new Map([["42", new Map([["alice", "officer"], ["bob", "member"]])]]);
const jc = JSONCodec();

async function main() {
  const nc = await connect({ servers: process.env.NATS_URL || "nats://127.0.0.1:4222" });
  // A queue group: run as many copies as you like; each join is asked once.
  const sub = nc.subscribe("fabric_join.guild.*", { queue: "guild-joins" });
  await nc.flush();
  console.log("ready");
  for await (const m of sub) {
    let reply = { ok: false, reason: "not a member" }; // anything unreadable: refused
    try {
      const req = jc.decode(m.data);
      const guild = String(req.topic).slice("guild:".length);
      const members = roles.get(guild);
      const role = members && members.get(req.subjectId);
      if (role) {
        reply = { ok: true, response: { guild, members: members.size }, assigns: { role }, cacheTtlMs: 1000 };
      }
    } catch (e) {
      console.error("bad join request:", e.message);
    }
    m.respond(jc.encode(reply));
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
