// Open-loop gRPC load generator with deadlines, for overload benchmarks.
//
// Sends one pre-serialized request message to a unary method at Poisson-distributed times for a set rate,
// whether or not answers come (a closed-loop tool slows down with the server it measures), each call with a
// deadline, over several connections; records how every call ended. Prints one JSON object: what was offered,
// how far the sender fell behind its schedule, outcomes by status code with their latency percentiles, and the
// generator's own CPU time.
//
// Build: g++ -O2 -std=c++17 openloop.cc $(pkg-config --cflags --libs grpc++) -o openloop   (Debian: libgrpc++-dev)
// Usage: openloop TARGET METHOD PAYLOAD_FILE RATE DURATION_S DEADLINE_S [CONNECTIONS] [SEED]

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using Clock = std::chrono::steady_clock;

namespace {

struct Call {
  grpc::ClientContext context;
  grpc::ByteBuffer response;
  grpc::Status status;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader;
  Clock::time_point sent;
};

struct Outcomes {
  std::mutex lock;
  std::map<std::string, std::vector<double>> latency_ms;  // by status code
  long finished = 0;
};

const char* code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    default: return "OTHER";
  }
}

double percentile(std::vector<double>& values, double q) {
  if (values.empty()) return -1;
  std::sort(values.begin(), values.end());
  size_t index = static_cast<size_t>(q / 100.0 * (values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

void drain(grpc::CompletionQueue* queue, Outcomes* outcomes) {
  void* tag;
  bool ok;
  while (queue->Next(&tag, &ok)) {
    auto* call = static_cast<Call*>(tag);
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - call->sent).count();
    {
      std::lock_guard<std::mutex> guard(outcomes->lock);
      outcomes->latency_ms[code_name(call->status.error_code())].push_back(ms);
      outcomes->finished += 1;
    }
    delete call;
  }
}

double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec + (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr, "usage: %s TARGET METHOD PAYLOAD_FILE RATE DURATION_S DEADLINE_S [CONNECTIONS] [SEED]\n",
                 argv[0]);
    return 2;
  }
  const std::string target = argv[1], method = argv[2];
  std::ifstream file(argv[3], std::ios::binary);
  if (!file) {
    std::fprintf(stderr, "cannot read %s\n", argv[3]);
    return 2;
  }
  std::stringstream contents;
  contents << file.rdbuf();
  const std::string payload = contents.str();
  const double rate = std::stod(argv[4]), duration_s = std::stod(argv[5]), deadline_s = std::stod(argv[6]);
  const int connections = argc > 7 ? std::stoi(argv[7]) : 4;
  const unsigned seed = argc > 8 ? static_cast<unsigned>(std::stoul(argv[8])) : 0;

  std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
  for (int index = 0; index < connections; ++index) {
    grpc::ChannelArguments arguments;
    arguments.SetInt("grpc.channel_index", index);  // distinct arguments: a connection of its own
    arguments.SetMaxReceiveMessageSize(64 << 20);
    arguments.SetMaxSendMessageSize(64 << 20);
    auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments);
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30))) {
      std::fprintf(stderr, "cannot connect to %s\n", target.c_str());
      return 1;
    }
    stubs.push_back(std::make_unique<grpc::GenericStub>(channel));
  }
  grpc::CompletionQueue queue;
  Outcomes outcomes;
  std::thread receiver(drain, &queue, &outcomes);

  grpc::Slice slice(payload);
  const grpc::ByteBuffer request(&slice, 1);
  std::mt19937_64 random(seed);
  std::exponential_distribution<double> gap(rate);
  const double cpu_before = cpu_seconds();
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(duration_s));
  auto due = start;
  long sent = 0;
  double late_ms = 0;
  while (true) {
    due += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(random)));
    if (due >= end) break;
    auto now = Clock::now();
    if (due > now) {
      std::this_thread::sleep_until(due);
    } else {
      late_ms = std::max(late_ms, std::chrono::duration<double, std::milli>(now - due).count());
    }
    auto* call = new Call;
    call->sent = Clock::now();
    call->context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                   std::chrono::duration<double>(deadline_s)));
    call->reader = stubs[sent % connections]->PrepareUnaryCall(&call->context, method, request, &queue);
    call->reader->StartCall();
    call->reader->Finish(&call->response, &call->status, call);
    ++sent;
  }
  const double wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  const auto give_up = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(deadline_s + 5.0));
  while (Clock::now() < give_up) {
    {
      std::lock_guard<std::mutex> guard(outcomes.lock);
      if (outcomes.finished >= sent) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const double cpu_s = cpu_seconds() - cpu_before;
  std::lock_guard<std::mutex> guard(outcomes.lock);
  std::printf("{\"sent\": %ld, \"wall_s\": %.4f, \"late_sends_ms\": %.3f, \"cpu_s\": %.4f, \"finished\": %ld, "
              "\"codes\": {", sent, wall_s, late_ms, cpu_s, outcomes.finished);
  bool first = true;
  for (auto& [code, latency] : outcomes.latency_ms) {
    std::printf("%s\"%s\": {\"count\": %zu, \"p50_ms\": %.3f, \"p99_ms\": %.3f}", first ? "" : ", ", code.c_str(),
                latency.size(), percentile(latency, 50), percentile(latency, 99));
    first = false;
  }
  std::printf("}}\n");
  std::fflush(stdout);
  std::_Exit(0);  // calls still pending past the grace are abandoned with the process
}
