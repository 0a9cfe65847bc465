// Replays a planned op (src/backend/cuda/plan.rs, written out by
// tests/cuda_emu/replay.rs) on the emulator: the buffers it names, then each
// launch with the host's own kernel, grid, block and arguments. A driver lists
// the kernels it may launch (ENTRY) and calls replay_main; each kernel's
// parameter types unpack its arguments, and a buffer of the wrong element type
// or an argument of the wrong kind fails the run, so a plan that does not fit
// its kernel cannot pass. Include it after emu.h, common.cuh and the kernel files.
//
// DIR/launches.txt, one item a line:
//   in NAME TYPE LEN        read DIR/NAME.f32 (DIR/NAME.i32 for i32), rounded to TYPE
//   out NAME TYPE LEN       NaN until written; written to DIR/NAME.f32 at the end
//   inout NAME TYPE LEN     read as an in, written back as an out (updated in place)
//   table FIELD...          the next launch's table (the buffer "table"), each
//                           FIELD p:NAME (a buffer's address, u64), u:N, w:N or f:HEX
//   launch SYMBOL GX GY GZ BX BY BZ SHARED ARG...
// with TYPE f32, f16, bf16 or i32 and each ARG one of b:NAME (a buffer's first
// element), u:N (u64), w:N (unsigned), f:HEX (float, its bits), d:N,N,N,N,N,N
// (Dims6).
#pragma once
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "driver.h"

namespace replay {

[[noreturn]] inline void fail(const std::string& what) {
    std::fprintf(stderr, "replay: %s\n", what.c_str());
    std::exit(2);
}

struct Buffer {
    std::string type;
    size_t len = 0;
    std::vector<unsigned char> bytes;
};

struct Arg {
    char kind = 0;  // b, u, w, f, d
    u64 value = 0;
    float f = 0;
    u64 dims[6] = {};
    Buffer* buf = nullptr;
    std::string text;
};

// Calls f(E{}) with E the element type named `type`.
template <class F>
void with_type(const std::string& type, F f) {
    if (type == "f32") f(float{});
    else if (type == "f16") f(__half{});
    else if (type == "bf16") f(__nv_bfloat16{});
    else if (type == "i32") f(int{});
    else if (type == "u8") f((unsigned char){});
    else fail("no element type " + type);
}

template <class E>
bool is_type(const std::string& type) {
    using V = std::remove_cv_t<E>;
    if constexpr (std::is_same_v<V, float>) return type == "f32";
    else if constexpr (std::is_same_v<V, __half>) return type == "f16";
    else if constexpr (std::is_same_v<V, __nv_bfloat16>) return type == "bf16";
    else if constexpr (std::is_same_v<V, int>) return type == "i32";
    else return type == "table";  // the kernel's own slot struct
}

// The argument as the kernel's parameter type P.
template <class P>
P unpack(const Arg& a, const char* symbol) {
    auto want = [&](char k) {
        if (a.kind != k)
            fail(std::string(symbol) + ": argument " + a.text + " is not of kind " + k);
    };
    if constexpr (std::is_pointer_v<P>) {
        want('b');
        if (!is_type<std::remove_pointer_t<P>>(a.buf->type))
            fail(std::string(symbol) + ": buffer " + a.text + " holds " + a.buf->type);
        return reinterpret_cast<P>(a.buf->bytes.data());
    } else if constexpr (std::is_same_v<P, u64>) {
        want('u');
        return a.value;
    } else if constexpr (std::is_same_v<P, unsigned>) {
        want('w');
        return (unsigned)a.value;
    } else if constexpr (std::is_same_v<P, float>) {
        want('f');
        return a.f;
    } else {
        // Dims6, whichever kernel file declares it.
        want('d');
        P p;
        for (int k = 0; k < 6; k++) p.d[k] = a.dims[k];
        return p;
    }
}

using Invoker = std::function<void(const char*, dim3, unsigned, const std::vector<Arg>&)>;

template <class... P>
Invoker invoker(void (*kernel)(P...)) {
    return [kernel](const char* symbol, dim3 grid, unsigned block, const std::vector<Arg>& args) {
        if (args.size() != sizeof...(P))
            fail(std::string(symbol) + ": " + std::to_string(args.size()) + " arguments for " +
                 std::to_string(sizeof...(P)) + " parameters");
        [&]<size_t... I>(std::index_sequence<I...>) {
            emu::launch(grid, block, kernel, unpack<P>(args[I], symbol)...);
        }(std::index_sequence_for<P...>{});
    };
}

inline Arg parse_arg(const std::string& tok, std::map<std::string, Buffer>& bufs) {
    if (tok.size() < 2 || tok[1] != ':') fail("bad argument " + tok);
    Arg a;
    a.kind = tok[0];
    a.text = tok;
    std::string v = tok.substr(2);
    switch (a.kind) {
    case 'b': {
        auto it = bufs.find(v);
        if (it == bufs.end()) fail("no buffer " + v);
        a.buf = &it->second;
        break;
    }
    case 'u':
    case 'w': a.value = std::strtoull(v.c_str(), 0, 10); break;
    case 'f': {
        unsigned bits = (unsigned)std::strtoul(v.c_str(), 0, 16);
        std::memcpy(&a.f, &bits, 4);
        break;
    }
    case 'd': {
        std::stringstream ss(v);
        std::string d;
        for (int k = 0; k < 6; k++) {
            if (!std::getline(ss, d, ',')) fail("bad dims " + tok);
            a.dims[k] = std::strtoull(d.c_str(), 0, 10);
        }
        break;
    }
    default: fail("bad argument " + tok);
    }
    return a;
}

inline Buffer make_buffer(const std::string& dir, const std::string& role, const std::string& name,
                          const std::string& type, size_t len) {
    Buffer b{type, len, {}};
    with_type(type, [&](auto tag) {
        using E = decltype(tag);
        std::vector<E> v;
        if constexpr (std::is_same_v<E, int>) {
            if (role != "in") fail("i32 buffer " + name + " is not an input");
            v = read_i32(dir + "/" + name + ".i32", len);
        } else if constexpr (std::is_same_v<E, unsigned char>) {
            // Codes of 8-bit optimizer state, travelling as f32 0..255.
            std::vector<float> f = role != "out" ? read_f32(dir + "/" + name + ".f32", len)
                                                 : std::vector<float>(len, 170.0f);
            for (float x : f) v.push_back((unsigned char)(int)x);
        } else {
            v = role != "out" ? narrow<E>(read_f32(dir + "/" + name + ".f32", len)) : poisoned<E>(len);
        }
        b.bytes.resize(len * sizeof(E));
        std::memcpy(b.bytes.data(), v.data(), b.bytes.size());
    });
    return b;
}

inline void write_buffer(const std::string& dir, const std::string& name, const Buffer& b) {
    with_type(b.type, [&](auto tag) {
        using E = decltype(tag);
        if constexpr (std::is_same_v<E, unsigned char>) {
            std::vector<float> f(b.bytes.begin(), b.bytes.end());
            write_f32(dir + "/" + name + ".f32", f);
        } else if constexpr (!std::is_same_v<E, int>) {
            std::vector<E> v(b.len);
            std::memcpy(v.data(), b.bytes.data(), b.bytes.size());
            write_out(dir, name.c_str(), v);
        }
    });
}

}  // namespace replay

// One row of a driver's kernel table: {"symbol", invoker}.
#define ENTRY(k) {#k, replay::invoker(&k)},

// usage: DRIVER DIR — replays DIR/launches.txt with the kernels of `table`.
inline int replay_main(int argc, char** argv, const std::map<std::string, replay::Invoker>& table) {
    using namespace replay;
    if (argc != 2) fail("usage: DRIVER DIR");
    std::string dir = argv[1];
    std::ifstream in(dir + "/launches.txt");
    if (!in) fail("cannot read " + dir + "/launches.txt");
    std::map<std::string, Buffer> bufs;
    std::vector<std::string> outs;
    for (std::string line; std::getline(in, line);) {
        std::stringstream ss(line);
        std::string what;
        ss >> what;
        if (what == "in" || what == "out" || what == "inout") {
            std::string name, type;
            size_t len = 0;
            if (!(ss >> name >> type >> len)) fail("bad line: " + line);
            bufs[name] = make_buffer(dir, what, name, type, len);
            if (what != "in") outs.push_back(name);
        } else if (what == "table") {
            Buffer t{"table", 0, {}};
            for (std::string tok; ss >> tok;) {
                unsigned char field[8];
                if (tok[0] == 'w') {  // an `unsigned`: 4 bytes, little-endian
                    unsigned w = (unsigned)std::stoul(tok.substr(2));
                    std::memcpy(field, &w, 4);
                    t.bytes.insert(t.bytes.end(), field, field + 4);
                    continue;
                }
                Arg a = parse_arg(tok[0] == 'p' ? "b" + tok.substr(1) : tok, bufs);
                size_t size = 8;
                if (a.kind == 'b') {
                    u64 p = (u64)a.buf->bytes.data();
                    std::memcpy(field, &p, 8);
                } else if (a.kind == 'u') {
                    std::memcpy(field, &a.value, 8);
                } else if (a.kind == 'f') {
                    std::memcpy(field, &a.f, size = 4);
                } else {
                    fail("bad table field " + tok);
                }
                t.bytes.insert(t.bytes.end(), field, field + size);
            }
            bufs["table"] = std::move(t);
        } else if (what == "launch") {
            std::string symbol;
            dim3 grid, block;
            unsigned shared = 0;
            if (!(ss >> symbol >> grid.x >> grid.y >> grid.z >> block.x >> block.y >> block.z >>
                  shared))
                fail("bad line: " + line);
            auto k = table.find(symbol);
            if (k == table.end()) fail("the driver has no kernel " + symbol);
            if (block.y != 1 || block.z != 1 || shared != 0)
                fail(symbol + ": the emulator takes 1-D blocks without dynamic shared memory");
            std::vector<Arg> args;
            for (std::string tok; ss >> tok;) args.push_back(parse_arg(tok, bufs));
            k->second(symbol.c_str(), grid, block.x, args);
        } else if (!what.empty()) {
            fail("bad line: " + line);
        }
    }
    for (const auto& name : outs) write_buffer(dir, name, bufs[name]);
    return 0;
}
