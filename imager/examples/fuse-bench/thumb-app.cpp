// A deliberately large firmware application for the fuse benchmark: it pulls in much of
// libstdc++ (streams, locales, regex, containers, random, strings) and libm, as a big C++
// firmware would. Built by arm-none-eabi-g++ for Cortex-M0 and Cortex-M4F; the benchmark
// fuses the resulting Thumb code.
#include <algorithm>
#include <cmath>
#include <codecvt>
#include <complex>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <locale>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <valarray>
#include <vector>

extern "C" int getentropy(void *, unsigned) { return -1; }

template <class C> static void text_work(std::basic_string<C> s) {
    std::basic_regex<C> re(s);
    std::match_results<typename std::basic_string<C>::const_iterator> m;
    std::regex_search(s, m, re);
    std::basic_ostringstream<C> os;
    os << std::setw(8) << std::hex << m.size() << std::put_money(12.5L);
    std::basic_istringstream<C> is(os.str());
    long double d;
    is >> std::get_money(d);
    std::use_facet<std::ctype<C>>(std::locale()).toupper(&s[0], &s[0] + s.size());
}

int main(int argc, char **argv) {
    std::map<std::string, std::complex<double>> readings;
    std::unordered_map<int, std::set<float>> buckets;
    std::mt19937_64 rng(argc);
    std::normal_distribution<double> noise;
    std::gamma_distribution<float> gamma;
    for (int i = 0; i < argc; i++) {
        readings[argv[i]] = std::polar(std::sin(i) * std::exp(i), std::atan2(i, 3.0));
        buckets[i].insert(gamma(rng));
    }
    std::valarray<double> va(argc);
    va = va.apply([](double x) { return std::tgamma(x) + std::erf(x) + std::cbrt(x); });
    text_work<char>(argv[0]);
    text_work<wchar_t>(L"abc");
    std::wstring_convert<std::codecvt_utf8<wchar_t>> cv;
    std::wstring w = cv.from_bytes(argv[0]);
    std::ofstream log("log");
    log << std::fixed << std::setprecision(3) << noise(rng) << std::scientific << va.sum();
    std::wcout << w << std::endl;
    std::cerr << std::hexfloat << 1.5 << std::endl;
    std::function<long(long)> fib = [&](long x) { return x < 2 ? x : fib(x - 1) + fib(x - 2); };
    std::printf("%f %ld %Lf\n", std::log10(argc * 1.5), fib(argc), std::sqrt((long double)argc));
    return 0;
}
